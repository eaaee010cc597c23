"""What `gnnmd md` promises about its output folder and its failures: --overwrite replaces only a folder
gnnmd md wrote, an overwriting run leaves nothing of the run before, and a catastrophic temperature jump
stops the run as a failure within a few steps (exit 1, one line, the outputs up to there kept)."""

from __future__ import annotations

import json

import numpy as np
import torch

from gnnmd.cli import main
from gnnmd.data import load_frames
from gnnmd.lammps.md_output import KIND
from gnnmd.models import build_model
from gnnmd.models.checkpoint import save_checkpoint


def _md(model, data_file, out, steps: int, *extra) -> list[str]:
    models = [str(m) for m in model] if isinstance(model, list) else [str(model)]
    args = ["md", "--model", *models, "--system", str(data_file), "--steps", str(steps), "--out", str(out)]
    return [*args, "--no-progress", *extra]


def _listing(folder):
    return sorted((p.name, p.read_bytes()) for p in folder.iterdir())


def test_overwrite_replaces_only_a_folder_gnnmd_md_wrote(argon_run, argon_model, tmp_path, capsys):
    """A training run's folder (its summary.json, its checkpoint) and an MD folder with the user's own
    file in it are refused, even with --overwrite, and left as they were; an MD folder (this run's kind,
    or one from before the kind, known by its files) is replaced."""
    data_file = argon_run / "segment_000" / "system.data"
    training = tmp_path / "runs" / "R"
    training.mkdir(parents=True)
    (training / "summary.json").write_text(json.dumps({"best_epoch": 3, "val_force_mae": 0.1}))
    (training / "best.pt").write_bytes(argon_model.read_bytes())
    before = _listing(training)
    assert main(_md(argon_model, data_file, training, 4, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "replaces only a folder gnnmd md wrote" in err and "R:" in err
    assert _listing(training) == before
    training.joinpath("best.pt").unlink()  # its summary.json alone is still not an MD run's
    assert main(_md(argon_model, data_file, training, 4, "--overwrite")) == 2
    assert "summary.json is not an MD run's" in capsys.readouterr().err

    md = tmp_path / "md"
    assert main(_md(argon_model, data_file, md, 4)) == 0
    summary = json.loads((md / "summary.json").read_text())
    assert summary["kind"] == KIND
    (md / "notes.txt").write_text("mine")
    assert main(_md(argon_model, data_file, md, 4, "--overwrite")) == 2
    assert "notes.txt" in capsys.readouterr().err and (md / "notes.txt").read_text() == "mine"
    (md / "notes.txt").unlink()
    del summary["kind"]  # as gnnmd md wrote it before the kind
    (md / "summary.json").write_text(json.dumps(summary))
    assert main(_md(argon_model, data_file, md, 6, "--overwrite")) == 0
    assert json.loads((md / "summary.json").read_text())["steps"] == 6


def test_an_overwriting_run_leaves_nothing_of_the_run_before(argon_run, argon_model, tmp_path):
    """A committee run's deviation.txt does not outlive it under a single model's run into its folder,
    and no working folder is left beside it."""
    data_file = argon_run / "segment_000" / "system.data"
    out = tmp_path / "md"
    assert main(_md([argon_model, argon_model], data_file, out, 4)) == 0
    assert (out / "deviation.txt").is_file() and json.loads((out / "summary.json").read_text())["committee"]
    assert main(_md(argon_model, data_file, out, 4, "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["log.lammps", "summary.json", "thermo.txt", "trajectory.lammpstrj"]
    assert json.loads((out / "summary.json").read_text())["committee"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["md"]


def test_a_temperature_jump_stops_the_run_as_a_failure(argon_run, tmp_path, capsys):
    """A model whose forces are thousands of times argon's heats 300 K to over 1500 K (5x) in a few steps:
    LAMMPS stops there, the run is a failure (summary, exit 1, one line), not a 100 fs runaway warning."""
    frames = load_frames(argon_run)
    torch.manual_seed(0)
    model = build_model("eqforce", cutoff=6.0, hidden=16, layers=2, radial=8)
    model.set_normalisation({"force_scale": 3000 * float(np.sqrt((frames.forces**2).mean()))})
    path = save_checkpoint(tmp_path / "wild.pt", model, type_table=frames.topology.type_table(), normalisation={})
    out = tmp_path / "md"
    data_file = argon_run / "segment_000" / "system.data"
    assert main(_md(path, data_file, out, 200, "--temperature", "300", "--dump-every", "1")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blew up at step" in err[0] and "temperature jumped" in err[0]
    summary = json.loads((out / "summary.json").read_text())
    failed_at = summary["failed_at_step"]
    assert (
        summary["blown_up"] and 1 <= failed_at <= 30 and "over 5 times the run's reference 300 K" in summary["failure"]
    )
    thermo = np.loadtxt(out / "thermo.txt", ndmin=2)
    assert thermo[-1, 0] == failed_at - 1 and thermo[:, 1].max() <= 5 * 300.0  # the rows before the jump
    assert (out / "trajectory.lammpstrj").is_file()
