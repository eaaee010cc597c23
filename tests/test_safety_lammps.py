"""Never lose a user's data, LAMMPS side: paths reach LAMMPS safely (spaces work; a path LAMMPS cannot
take is refused before it starts; no user string becomes a LAMMPS command), every failure of an MD run
is a recorded result with nothing after the failure in its outputs, `gnnmd rdf` refuses a blown-up
trajectory, and MD refuses several MPI ranks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import load_frames
from gnnmd.models import build_model
from gnnmd.models.checkpoint import save_checkpoint

# a folder name with what LAMMPS would split on, substitute or take as a comment or a file pattern
AWKWARD = "my data $HOME #1 *%"
# quoted in the commands gnnmd builds; linked to from the temp folder as well
AWKWARD_NAMES = ["my data ${HOME} $x #1", "run *% \u00e9t\u00e9 \u201cq\u201d"]


@pytest.fixture(scope="module")
def violent_water_model(water_run, tmp_path_factory):
    """An untrained eqforce water model with huge forces: with a 5 fs step LAMMPS loses bond atoms."""
    frames = load_frames(water_run)
    torch.manual_seed(0)
    model = build_model("eqforce", cutoff=6.0, hidden=16, layers=2, radial=8)
    model.set_normalisation({"force_scale": 300.0})
    path = tmp_path_factory.mktemp("model") / "violent.pt"
    save_checkpoint(path, model, type_table=frames.topology.type_table(), normalisation={"force_scale": 300.0})
    return path


def _dump_steps(dump: Path) -> list[int]:
    lines = dump.read_text().splitlines()
    return [int(lines[k + 1]) for k, line in enumerate(lines) if line.startswith("ITEM: TIMESTEP")]


def _thermo_steps(thermo: Path) -> list[int]:
    return [int(row[0]) for row in np.loadtxt(thermo, comments="#", ndmin=2)]


def _md_args(model, data_file, out, steps=10, *extra):
    args = ["md", "--model", str(model), "--system", str(data_file), "--steps", str(steps), "--out", str(out)]
    return [*args, "--no-progress", *extra]


# 3. paths reach LAMMPS safely


@pytest.mark.parametrize("awkward", AWKWARD_NAMES)
def test_md_works_in_folders_with_spaces_and_special_characters(argon_run, argon_model, tmp_path, capsys, awkward):
    folder = tmp_path / awkward
    folder.mkdir()
    data_file = folder / "system data.data"
    shutil.copy(argon_run / "segment_000" / "system.data", data_file)
    out = tmp_path / f"md out {awkward}"
    assert main(_md_args(argon_model, data_file, out, 10, "--dump-every", "5")) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert _dump_steps(out / "trajectory.lammpstrj") == [0, 5, 10]
    assert _thermo_steps(out / "thermo.txt") == list(range(11))
    assert (out / "log.lammps").is_file() and (out / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([awkward, out.name])  # nothing written beside
    assert sorted(p.name for p in out.iterdir()) == ["log.lammps", "summary.json", "thermo.txt", "trajectory.lammpstrj"]


def test_generate_works_in_a_folder_with_spaces_and_special_characters(tmp_path, capsys):
    out = tmp_path / AWKWARD / "argon set"
    args = ["generate", "argon", "--out", str(out), "--atoms", "32", "--frames", "2", "--stride", "5"]
    assert main([*args, "--equil-steps", "0", "--threads", "1", "--no-progress"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["frame_count"] == 2 and manifest["atoms"] == 32
    assert len(load_frames(out)) == 2
    assert sorted(p.name for p in (out / "segment_000").iterdir()) == [
        "energy.txt", "frames.lammpstrj", "log.lammps", "system.data",
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == [AWKWARD]  # nothing written where a split path points
    assert "argon set" in [p.name for p in (tmp_path / AWKWARD).iterdir()]


@pytest.mark.parametrize("bad, what", [("\n", "newline"), ("\r", "carriage return"), ("'", "quote"), ('"', "quote")])
def test_md_refuses_a_path_lammps_cannot_take(argon_run, argon_model, tmp_path, capsys, bad, what):
    """Nothing of a path reaches LAMMPS as a command: the run is refused, naming the path, before LAMMPS
    starts; the injected `shell` command never runs."""
    injected = tmp_path / "injected"
    # before the fix, with a newline: `dump ... .../md id x`, `shell touch ...`, `print /trajectory.lammpstrj ...`
    out = tmp_path / f"md id x{bad}shell touch {injected}{bad}print x"
    data_file = argon_run / "segment_000" / "system.data"
    assert main(_md_args(argon_model, data_file, out, 2)) == 2
    err = capsys.readouterr().err
    assert err.startswith("gnnmd md: error:") and "Traceback" not in err
    assert what in err and "shell touch" in err and repr(str(out)) in err
    assert not injected.exists() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_md_refuses_a_system_path_lammps_cannot_take(argon_run, argon_model, tmp_path, capsys):
    folder = tmp_path / f"data\nshell mkdir -p {tmp_path}/injected"
    folder.mkdir(parents=True)
    data_file = folder / "system.data"
    shutil.copy(argon_run / "segment_000" / "system.data", data_file)
    out = tmp_path / "md"
    assert main(_md_args(argon_model, data_file, out, 2)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and repr(str(data_file)) in err and "newline" in err
    assert not out.exists() and not (tmp_path / "injected").exists()


def test_generate_refuses_a_path_lammps_cannot_take(tmp_path, capsys):
    injected = tmp_path / "injected"
    out = tmp_path / f"set\nshell touch {injected}"
    args = ["generate", "argon", "--out", str(out), "--atoms", "32", "--frames", "2", "--stride", "5"]
    assert main([*args, "--equil-steps", "0", "--threads", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gnnmd generate: error:") and "Traceback" not in err and "newline" in err
    assert "shell touch" in err
    assert not injected.exists() and not out.exists()


# 4. every failure of an MD run is a result, with nothing after the failure


def test_a_violent_run_is_a_blown_up_run(water_run, violent_water_model, tmp_path, capsys):
    """The temperature jumps past 5x its start at the first step, stopped there by LAMMPS' fix halt (before,
    LAMMPS found the torn molecule a few steps on, "Bond atoms ... missing"): a summary, exit code 1, no
    traceback, and the dump and thermo table end before the failure; `gnnmd rdf` refuses the dump."""
    data_file = water_run / "segment_000" / "system.data"
    out = tmp_path / "md"
    assert main(_md_args(violent_water_model, data_file, out, 200, "--timestep", "5", "--dump-every", "2")) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "blew up at step" in err and "temperature jumped" in err
    summary = json.loads((out / "summary.json").read_text())
    failed_at = summary["failed_at_step"]
    assert summary["blown_up"] and failed_at >= 1 and "temperature jumped" in summary["failure"]
    assert summary["steps"] == 200 and summary["atoms"] == 96
    dump_steps = _dump_steps(out / "trajectory.lammpstrj")
    assert dump_steps == list(range(0, failed_at, 2))
    assert _thermo_steps(out / "thermo.txt") == list(range(failed_at))

    reference = water_run / "segment_000" / "frames.lammpstrj"
    args = ["rdf", "--reference", str(reference), "--trajectory", str(out / "trajectory.lammpstrj")]
    prefix = tmp_path / "rdf"
    assert main([*args, "--data", str(data_file), "--out", str(prefix), "--r-max", "5"]) == 2
    err = capsys.readouterr().err
    assert "trajectory.lammpstrj" in err and "blew up" in err and "--allow-blown-up" in err
    assert "Traceback" not in err and not prefix.with_suffix(".json").exists()


class _FailsAtCall:
    """ModelForces that raises at its `fail_at`-th call (0: the setup's step 0), counting its calls."""

    calls = 0

    def __init__(self, real, fail_at: int):
        self.real, self.fail_at, self.info = real, fail_at, real.info

    def __call__(self, positions, cell):
        type(self).calls += 1
        if type(self).calls > self.fail_at:
            raise FloatingPointError("the model's forces or energy are not finite (test)")
        return self.real(positions, cell)


def test_a_model_failure_stops_lammps_and_ends_the_outputs(argon_run, argon_model, tmp_path, capsys, monkeypatch):
    """The model fails at step 7 of 100: LAMMPS stops there (the model is not asked again for 90 steps of
    zero forces), the dump and thermo table end at step 6, the summary says step 7 and why."""
    import gnnmd.lammps.md_model as md

    real = md.ModelForces
    _FailsAtCall.calls = 0
    monkeypatch.setattr(md, "ModelForces", lambda *args, **kw: _FailsAtCall(real(*args, **kw), 7))
    out = tmp_path / "md"
    data_file = argon_run / "segment_000" / "system.data"
    assert main(_md_args(argon_model, data_file, out, 100, "--dump-every", "2")) == 1
    err = capsys.readouterr().err
    assert "blew up at step 7" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["blown_up"] and summary["failed_at_step"] == 7 and "not finite (test)" in summary["failure"]
    assert _FailsAtCall.calls <= 9  # LAMMPS stopped at the failure
    assert _dump_steps(out / "trajectory.lammpstrj") == [0, 2, 4, 6]
    assert _thermo_steps(out / "thermo.txt") == list(range(7))


def _blown_up_copy(argon_run, tmp_path, failed_at: int) -> Path:
    """A copy of the argon dump (frames at steps 200, 220, ... 280) beside the summary of a run that
    blew up at `failed_at`, as `gnnmd md` before the fix left it: frames after the failure kept."""
    run = tmp_path / "blown"
    run.mkdir()
    shutil.copy(argon_run / "segment_000" / "frames.lammpstrj", run / "trajectory.lammpstrj")
    summary = {"blown_up": True, "failed_at_step": failed_at, "failure": "FloatingPointError: not finite"}
    (run / "summary.json").write_text(json.dumps(summary))
    return run / "trajectory.lammpstrj"


def test_rdf_refuses_a_blown_up_trajectory(argon_run, tmp_path, capsys):
    segment = argon_run / "segment_000"
    trajectory = _blown_up_copy(argon_run, tmp_path, 250)
    prefix = tmp_path / "rdf"
    args = ["rdf", "--reference", str(segment / "frames.lammpstrj"), "--trajectory", str(trajectory)]
    args += ["--data", str(segment / "system.data"), "--out", str(prefix)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(trajectory) in err and "blew up at step 250" in err and "--allow-blown-up" in err
    assert "Traceback" not in err and not prefix.with_suffix(".json").exists()


def test_rdf_uses_the_frames_before_the_failure_when_allowed(argon_run, tmp_path, capsys):
    from gnnmd.analysis.rdf import compare_rdfs, compute_rdfs, default_r_max

    segment = argon_run / "segment_000"
    trajectory = _blown_up_copy(argon_run, tmp_path, 250)
    prefix = tmp_path / "rdf"
    args = ["rdf", "--reference", str(segment / "frames.lammpstrj"), "--trajectory", str(trajectory)]
    args += ["--data", str(segment / "system.data"), "--out", str(prefix), "--allow-blown-up"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "blew up at step 250" in captured.err and "3 frames before" in captured.err
    report = json.loads(prefix.with_suffix(".json").read_text())
    data_file, reference = segment / "system.data", segment / "frames.lammpstrj"
    r_max = default_r_max(data_file, reference)
    expected = compare_rdfs(
        compute_rdfs(data_file, reference, r_max=r_max), compute_rdfs(data_file, reference, r_max=r_max, stop=3)
    )
    for pair, row in expected.items():
        assert report[pair] == pytest.approx(row)
    assert report["Ar-Ar"]["integrated_abs_diff"] > 0  # not all five frames


# 7. several MPI ranks: tests/test_md_ranks.py


def test_a_second_md_into_the_same_folder_is_refused(argon_run, argon_model, tmp_path, capsys):

    out = tmp_path / "md"
    code = "import sys, time; from gnnmd.files import FolderLock; FolderLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["md", "--model", str(argon_model), "--system", str(argon_run / "segment_000" / "system.data")]
        assert main([*args, "--steps", "2", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "another gnnmd process" in err and str(out) in err and "Traceback" not in err
        assert not (out / "summary.json").exists()
    finally:
        holder.kill()
        holder.wait()
