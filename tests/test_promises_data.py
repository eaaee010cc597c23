"""README's promises about a user's data, kept for data input and evaluation output: `--overwrite` never
wipes a dataset folder holding a user's file; the units of a LAMMPS run come from its data file and its
log, which must agree (nothing said: real, assumed, recorded and warned); an unreadable trajectory is one
line; `gnnmd evaluate` writes only a new .json (and .png) in an existing folder, or its own earlier one with
`--overwrite`, and by default into the current folder, never beside the model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from gnnmd.cli import main
from gnnmd.data import coulomb_cache, load_frames, read_lammps
from gnnmd.data.reader import KCAL_PER_EV
from gnnmd.lammps.md_reference import run_lammps_md
from gnnmd.lammps.md_settings import MDSettings


def checksums(folder):
    """Every file under `folder` (relative path -> sha256): what must stay as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def plain_run(water_run, tmp_path_factory):
    """A LAMMPS run with nothing of gnnmd's dataset around it: data file, dump with forces, log."""
    out = tmp_path_factory.mktemp("plain") / "run"
    data_file = water_run / "segment_000" / "system.data"
    run_lammps_md(data_file, "spcfw.ff", MDSettings(6, temperature=300.0, dump_every=2), out)
    return data_file, out / "trajectory.lammpstrj", out / "log.lammps"


def segment_import(water_run, out, *extra):
    """`gnnmd import` argv of the water dataset's first segment (data file, dump, energy file)."""
    segment = water_run / "segment_000"
    return ["import", "--data", segment / "system.data", "--dump", segment / "frames.lammpstrj",
            "--energies", segment / "energy.txt", "--out", out, *extra]  # fmt: skip


# ---------------------------------------------------------------- 1. --overwrite and a user's files


@pytest.mark.parametrize("mine", ["notes.txt", "checkpoints/mine/model.pt", "segment_000/my_analysis.dat"])
def test_import_overwrite_refuses_a_dataset_holding_a_users_file(water_run, tmp_path, capsys, mine):
    out = tmp_path / "data"
    assert run_cli(segment_import(water_run, out), capsys)[0] == 0
    (out / mine).parent.mkdir(parents=True, exist_ok=True)
    (out / mine).write_text("the user's")
    before = checksums(out)
    code, _, err = run_cli(segment_import(water_run, out, "--overwrite"), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(out) in err and mine.split("/")[0] in err and "--overwrite" in err
    assert checksums(out) == before and not (tmp_path / ".data.partial").exists()


def test_overwrite_replaces_a_dataset_with_gnnmds_own_caches(water_run, tmp_path, capsys):
    """What gnnmd writes into a dataset (frames.npz, coulomb_<hash>.npz) does not block --overwrite."""
    from gnnmd.models.electrostatics import Electrostatics

    out = tmp_path / "data"
    assert run_cli(segment_import(water_run, out), capsys)[0] == 0
    frames = load_frames(out).subset(np.arange(2))
    coulomb_cache(frames, out, Electrostatics.for_system(frames.topology, frames.mean_cell()), progress=False)
    assert {p.name[:8] for p in out.iterdir()} >= {"frames.n", "coulomb_", "manifest"}
    assert run_cli(segment_import(water_run, out, "--overwrite"), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "segment_000"]


def test_generate_overwrite_refuses_a_dataset_holding_a_users_file(argon_run, tmp_path, capsys):
    out = tmp_path / "argon"
    shutil.copytree(argon_run, out)
    (out / "notes.txt").write_text("my notes")
    before = checksums(out)
    argv = ["generate", "argon", "--out", out, "--overwrite", "--atoms", "64", "--frames", "2", "--no-progress"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and str(out) in err and "notes.txt" in err and len(err.strip().splitlines()) == 1
    assert checksums(out) == before


# ---------------------------------------------------------------- 2. units of a LAMMPS run


def headerless(data_file, path):
    """The data file as one written by hand: no `units = ...` in its first line."""
    lines = data_file.read_text().splitlines()
    assert "units = real" in lines[0]
    path.write_text("\n".join(["LAMMPS data file written by hand", *lines[1:]]) + "\n")
    return path


def relabelled(path, source, old, new):
    text = source.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_a_metal_data_file_with_a_real_log_is_refused_naming_both(plain_run, tmp_path, capsys):
    data_file, dump, log = plain_run
    metal = relabelled(tmp_path / "metal.data", data_file, "units = real", "units = metal")
    assert "\nunits real" in log.read_text() or "units           real" in log.read_text()
    code, _, err = run_cli(["import", "--data", metal, "--dump", dump, "--log", log, "--out", tmp_path / "x"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(metal) in err and str(log) in err and "metal" in err and "real" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("where", ["log", "data"])
def test_lj_units_are_refused(plain_run, tmp_path, capsys, where):
    data_file, dump, log = plain_run
    if where == "log":
        data_file = headerless(data_file, tmp_path / "hand.data")
        log = relabelled(tmp_path / "log.lammps", log, "units real", "units lj")
        named = log
    else:
        data_file = named = relabelled(tmp_path / "lj.data", data_file, "units = real", "units = lj")
    argv = ["import", "--data", data_file, "--dump", dump, "--log", log, "--out", tmp_path / "x"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and str(named) in err and "units 'lj' are not supported" in err
    assert not (tmp_path / "x").exists()


def test_a_metal_log_converts_a_data_file_without_units(plain_run, tmp_path, capsys):
    """The log's `units metal` is what the run was in: forces, energies and epsilon are converted."""
    data_file, dump, log = plain_run
    hand = headerless(data_file, tmp_path / "hand.data")
    metal_log = relabelled(tmp_path / "log.lammps", log, "units real", "units metal")
    out = tmp_path / "converted"
    code, printed, err = run_cli(["import", "--data", hand, "--dump", dump, "--log", metal_log, "--out", out], capsys)
    assert code == 0 and "from metal" in printed and "warning" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_units"] == "metal" and manifest["units_source"] == "log"
    frames, raw = load_frames(out), read_lammps(data_file, dump)
    assert np.allclose(frames.forces, raw.forces * KCAL_PER_EV, rtol=1e-5)
    assert np.allclose(frames.topology.epsilon, raw.topology.epsilon * KCAL_PER_EV, rtol=1e-6)
    real = tmp_path / "real"  # the same log as LAMMPS wrote it: real, no conversion, from the log
    assert run_cli(["import", "--data", hand, "--dump", dump, "--log", log, "--out", real], capsys)[0] == 0
    manifest = json.loads((real / "manifest.json").read_text())
    assert manifest["input_units"] == "real" and manifest["units_source"] == "log"
    assert np.allclose(load_frames(real).energies * KCAL_PER_EV, frames.energies, rtol=1e-6)


def test_no_units_anywhere_is_real_assumed_recorded_and_warned(plain_run, tmp_path, capsys):
    data_file, dump, _ = plain_run
    hand = headerless(data_file, tmp_path / "hand.data")
    out = tmp_path / "assumed"
    code, _, err = run_cli(["import", "--data", hand, "--dump", dump, "--out", out], capsys)
    assert code == 0
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and str(hand) in warning[0] and "assumed real" in warning[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["units"] == manifest["input_units"] == "real" and manifest["units_source"] == "assumed"
    assert np.allclose(load_frames(out).forces, read_lammps(data_file, dump).forces)
    said = tmp_path / "said"  # the data file's own header: no warning, recorded as the data file's
    code, _, err = run_cli(["import", "--data", data_file, "--dump", dump, "--out", said], capsys)
    assert code == 0 and "warning" not in err
    assert json.loads((said / "manifest.json").read_text())["units_source"] == "data file"


# ---------------------------------------------------------------- 3. a trajectory ASE cannot read


@pytest.mark.parametrize("kind", ["random.xyz", "frames.npz"])
def test_a_binary_extxyz_is_one_line_naming_it(water_run, tmp_path, capsys, kind):
    trajectory = tmp_path / kind
    if kind == "frames.npz":
        load_frames(water_run)
        shutil.copyfile(water_run / "frames.npz", trajectory)
    else:
        trajectory.write_bytes(np.random.default_rng(0).bytes(4096))
    topology = water_run / "segment_000" / "system.data"
    argv = ["import", "--extxyz", trajectory, "--topology", topology, "--out", tmp_path / "x"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(trajectory) in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


# ---------------------------------------------------------------- 4. where gnnmd evaluate writes


def evaluate(model, data, *extra):
    return ["evaluate", "--model", model, "--data", data, "--no-progress", *extra]


def test_evaluate_out_must_be_a_new_json_in_an_existing_folder(argon_model, argon_run, tmp_path, capsys):
    inputs = tmp_path / "in"
    shutil.copytree(argon_run, inputs / "argon")
    shutil.copyfile(argon_run / "segment_000" / "system.data", inputs / "system.data")
    (inputs / "results.json").write_text('{"mine": 1}\n')
    (inputs / "folder.json").mkdir()
    (inputs / "link.json").symlink_to(inputs / "results.json")
    before = checksums(inputs)
    data = inputs / "argon"
    for out, overwrite, says in [
        (inputs / "system.data", "--overwrite", "must end in .json"),
        (tmp_path / "nowhere" / "x.json", "--overwrite", "does not exist"),
        (data / "manifest.json", "--overwrite", "inside the dataset"),
        (data / "eval.json", "--overwrite", "inside the dataset"),
        (inputs / "results.json", "--no-progress", "pass --overwrite"),
        (inputs / "results.json", "--overwrite", "not written by gnnmd evaluate"),
        (inputs / "folder.json", "--overwrite", "not a file"),
        (inputs / "link.json", "--overwrite", "is a link"),
    ]:
        code, _, err = run_cli(evaluate(argon_model, data, "--out", out, overwrite), capsys)
        assert code == 2 and str(out) in err and says in err and len(err.strip().splitlines()) == 1, (out, err)
    assert checksums(inputs) == before and not (tmp_path / "nowhere").exists()
    assert sorted(os.listdir(tmp_path)) == ["in"]


def test_evaluate_overwrites_only_its_own_earlier_result(argon_model, argon_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert run_cli(evaluate(argon_model, argon_run, "--out", out), capsys)[0] == 0
    first = json.loads(out.read_text())
    assert first["gnnmd_evaluate"] and first["frames"] == 5
    code, _, err = run_cli(evaluate(argon_model, argon_run, "--out", out), capsys)
    assert code == 2 and str(out) in err and "--overwrite" in err
    out.write_text(json.dumps({**first, "frames": -1}))
    assert run_cli(evaluate(argon_model, argon_run, "--out", out, "--overwrite"), capsys)[0] == 0
    assert json.loads(out.read_text())["frames"] == 5
    from gnnmd.analysis.plotting import pyplot

    mine = tmp_path / "mine.png"  # a plot of the user's (matplotlib too) where the parity plot would go: kept
    figure = pyplot().figure()
    figure.savefig(mine)
    before = mine.read_bytes()
    code, _, err = run_cli(evaluate(argon_model, argon_run, "--out", out, "--plot", mine, "--overwrite"), capsys)
    assert code == 2 and str(mine) in err and "not written by gnnmd evaluate" in err
    assert mine.read_bytes() == before


def test_evaluate_writes_into_the_current_folder_never_beside_the_model(
    argon_model, argon_run, tmp_path, capsys, monkeypatch
):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    beside_model = checksums(argon_model.parent)
    code, printed, _ = run_cli(evaluate(argon_model, argon_run), capsys)
    assert code == 0
    name = f"eval-{argon_model.parent.name}-{argon_model.stem}__{argon_run.name}-all"
    assert sorted(os.listdir(here)) == [f"{name}.json", f"{name}.png"] and f"wrote {name}.json" in printed
    assert checksums(argon_model.parent) == beside_model
    assert run_cli(evaluate(argon_model, argon_run), capsys)[0] == 2  # the same again: not without --overwrite
    assert run_cli(evaluate(argon_model, argon_run, "--overwrite"), capsys)[0] == 0
    assert checksums(argon_model.parent) == beside_model
