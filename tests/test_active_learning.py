"""One round of `gnnmd learn` on a tiny water system: only frames above the threshold are added, their
labels are the system's own force field (checked by an independent LAMMPS evaluation), the original
dataset is untouched and its validation split stays the same, and every member is fine-tuned."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gnnmd.cli import main
from gnnmd.data import load_frames, read_lammps
from gnnmd.data.dataset import split_indices
from gnnmd.data.frames import ADDED_SEGMENTS
from gnnmd.files import file_sha256
from gnnmd.lammps.engine import load_system_commands, start_lammps

MD = ["--temperatures", "300", "--steps", "40", "--dump-every", "4", "--timestep", "0.25"]


def _member(water_run, runs, seed: int):
    args = ["train", "--data", str(water_run), "--model", "nequip", "--hyper", "channels=4", "--hyper", "layers=1"]
    args += ["--cutoff", "3.0", "--epochs", "1", "--electrostatics", "none", "--seed", str(seed), "--batch-size", "2"]
    assert main([*args, "--runs-dir", str(runs), "--name", f"m{seed}", "--threads", "1", "--no-progress"]) == 0
    return runs / f"m{seed}" / "best.pt"


def _lammps_forces(data_file, positions: np.ndarray) -> np.ndarray:
    """SPC/Fw forces of one frame from a LAMMPS single point (run 0), not a rerun."""
    lmp = start_lammps()
    try:
        lmp.commands_list(load_system_commands(data_file, "spcfw.ff"))
        ids = lmp.numpy.extract_atom("id")[: lmp.extract_global("nlocal")]
        lmp.numpy.extract_atom("x")[: len(ids)] = positions[ids - 1]
        lmp.command("run 0")
        nlocal = lmp.extract_global("nlocal")
        forces = np.empty_like(positions)
        forces[lmp.numpy.extract_atom("id")[:nlocal] - 1] = lmp.numpy.extract_atom("f")[:nlocal]
        return forces
    finally:
        lmp.close()


@pytest.mark.slow
def test_one_round_adds_only_frames_above_the_threshold_labelled_by_lammps(water_run, tmp_path, capsys):
    members = [_member(water_run, tmp_path / "runs", seed) for seed in (1, 2)]
    before = {p.name: file_sha256(p) for p in water_run.rglob("*") if p.is_file() and p.name != "frames.npz"}
    base = load_frames(water_run)
    # the committee's deviation along the round's MD (same start, seed and settings) sets a threshold
    # that half the dumped frames pass
    probe = tmp_path / "probe"
    seed = 1 + 1000 * 1 + 0  # LearnPlan.seed + 1000 * round + state point
    args = ["md", "--committee", *map(str, members), "--system", str(water_run / "segment_000" / "system.data")]
    args += ["--steps", "40", "--dump-every", "4", "--timestep", "0.25", "--ensemble", "nvt", "--temperature", "300"]
    assert main([*args, "--seed", str(seed), "--out", str(probe), "--no-progress"]) in (0, 1)
    deviation = {int(s): d for s, d, _ in np.loadtxt(probe / "deviation.txt", ndmin=2)}
    dumped = [s for s in range(0, 41, 4) if s in deviation]
    threshold = float(np.median([deviation[s] for s in dumped]))
    out = tmp_path / "learn"
    args = ["learn", "--data", str(water_run), "--models", *map(str, members), "--out", str(out), "--rounds", "1"]
    args += [*MD, "--epochs", "1", "--max-frames", "50", "--threshold", str(threshold), "--no-progress"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    added = report["rounds"][0]["added"][0]
    expected = [s for s in dumped if deviation[s] > threshold]
    assert added["timesteps"] == expected and 0 < len(expected) < len(dumped)
    # labels: the system's force field at the MD's positions
    labelled = read_lammps(
        added["segment"]["data_file"], added["segment"]["dump_file"], added["segment"]["energy_file"]
    )
    md = read_lammps(water_run / "segment_000" / "system.data", probe / "trajectory.lammpstrj")
    for k, step in enumerate(labelled.timesteps):
        at = list(md.timesteps).index(step)
        assert np.allclose(labelled.positions[k], md.positions[at], atol=1e-4)
        reference = _lammps_forces(water_run / "segment_000" / "system.data", md.positions[at].astype(np.float64))
        assert np.abs(labelled.forces[k] - reference).max() < 1e-3 * np.abs(reference).max()
    # the original dataset is untouched; the round's dataset is it plus the labelled frames, as training frames
    assert before == {p.name: file_sha256(p) for p in water_run.rglob("*") if p.is_file() and p.name != "frames.npz"}
    grown = load_frames(report["rounds"][0]["dataset"])
    n = len(base)
    assert len(grown) == n + len(expected)
    assert np.array_equal(grown.positions[:n], base.positions) and np.array_equal(grown.forces[:n], base.forces)
    assert np.all(grown.segments[n:] >= ADDED_SEGMENTS)
    train, val = split_indices(grown, 0.1, 0)
    base_train, base_val = split_indices(base, 0.1, 0)
    assert np.array_equal(val, base_val) and set(range(n, len(grown))) <= set(train)
    manifest = json.loads((out / "round_01" / "data" / "manifest.json").read_text())
    assert manifest["segments"][-1]["origin"] == "active-learning" and manifest["segments"][-1]["round"] == 1
    # every member fine-tuned from its predecessor on the grown dataset
    rows = report["rounds"][0]["members"]
    assert len(rows) == 2 and all(np.isfinite(row["best_val_force_mae"]) for row in rows)
    for k in range(len(rows)):
        config = json.loads((out / "round_01" / "models" / f"member_{k}" / "config.json").read_text())
        assert config["init_from"] == str(members[k].resolve()) and config["frames"] == n + len(expected)
    assert report["final"]["models"] == [row["model"] for row in rows]
    assert "threshold" in capsys.readouterr().out
    # run again: everything is found done, nothing is redone
    stamp = (out / "round_01" / "report.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "round_01" / "report.json").stat().st_mtime_ns == stamp


def test_priors_are_fitted_on_the_references_own_frames(water_run):
    """Frames added by active learning are the model's excursions: the walls (and scales) fitted when
    fine-tuning on the grown dataset come from the original frames only, unless there are none."""
    from dataclasses import replace

    from gnnmd.data.graphs import BOND
    from gnnmd.models.nequip import NequIP
    from gnnmd.train.setup import reference_frames

    frames = load_frames(water_run)
    squeezed = frames.positions.copy()
    o, h = sorted(int(a) for a in frames.topology.bonds[0])
    squeezed[-1, h] = squeezed[-1, o] + 0.6 * (squeezed[-1, h] - squeezed[-1, o])  # an O-H bond at ~0.6 A
    segments = frames.segments.copy()
    segments[-1] = ADDED_SEGMENTS
    grown = replace(frames, positions=squeezed, segments=segments)
    everything = np.arange(len(frames))
    assert list(reference_frames(grown, everything)) == list(everything[:-1])
    walls = []
    for indices in (everything, reference_frames(grown, everything)):
        model = NequIP(channels=4, l_max=1, layers=1, cutoff=3.0)
        model.fit_priors(grown, indices=indices)
        walls.append(float(model.core_radius[:, :, BOND].max()))  # the O-H bond's core radius
    assert 0 < walls[0] < 0.8 * walls[1]  # the added frame would have moved the O-H wall in
    only_added = np.array([len(frames) - 1])
    assert list(reference_frames(grown, only_added)) == [len(frames) - 1]
