"""A committee of models: the deviation is zero for identical members and positive otherwise, MD with a
committee integrates the members' mean force and logs the deviation per step, and a run whose
temperature or energy runs away is flagged (summary, log, exit message) instead of called fine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import load_frames, read_lammps
from gnnmd.inference.committee import CommitteeForces, deviation_quality, force_deviation, rank_correlation
from gnnmd.inference.forces import ModelForces
from gnnmd.lammps.thermo import find_runaway
from gnnmd.models import build_model
from gnnmd.models.checkpoint import save_checkpoint


def _nequip(frames, path, seed: int):
    torch.manual_seed(seed)
    model = build_model("nequip", channels=4, layers=1, cutoff=5.0)
    rms = float(np.sqrt((frames.forces**2).mean()))
    return save_checkpoint(path, model, type_table=frames.topology.type_table(), normalisation={"force_scale": rms})


@pytest.fixture(scope="module")
def argon_pair(argon_run, tmp_path_factory):
    """Two tiny nequip models of argon that differ only in their seed."""
    frames = load_frames(argon_run)
    folder = tmp_path_factory.mktemp("committee")
    return frames, _nequip(frames, folder / "a.pt", 1), _nequip(frames, folder / "b.pt", 2)


def test_deviation_is_zero_for_identical_members_and_positive_otherwise(argon_pair):
    frames, a, b = argon_pair
    positions, cell = frames.positions[0].astype(np.float64), frames.cells[0].astype(np.float64)
    same = CommitteeForces([a, a], frames.topology)
    forces, energy = same(positions, cell)
    alone, alone_energy = ModelForces(a, frames.topology)(positions, cell)
    assert np.allclose(forces, alone) and energy == pytest.approx(alone_energy)
    assert np.abs(alone).max() > 1e-3  # the models give forces: a zero deviation is not trivial
    assert np.all(same.last_deviation == 0.0)
    different = CommitteeForces([a, b], frames.topology)
    forces, _ = different(positions, cell)
    fb, _ = ModelForces(b, frames.topology)(positions, cell)
    assert np.allclose(forces, (alone + fb) / 2)
    expected = np.linalg.norm(alone - fb, axis=1) / 2  # two members: half their distance
    assert np.all(different.last_deviation > 0) and np.allclose(different.last_deviation, expected)


def test_force_deviation_and_its_quality_measures():
    forces = np.zeros((3, 2, 3))
    forces[:, 1, 0] = [1.0, 2.0, 3.0]
    assert np.allclose(force_deviation(forces), [0.0, np.sqrt(2.0 / 3.0)])
    rng = np.random.default_rng(0)
    error = rng.random(1000)
    assert rank_correlation(error, error**3) == pytest.approx(1.0)
    assert rank_correlation(error, -error) == pytest.approx(-1.0)
    quality = deviation_quality(error * 2, error, threshold=1.0)
    assert quality["mean_error_above"] > 0.5 > quality["mean_error_below"]
    assert quality["count_above"] + quality["count_below"] == 1000


def test_committee_needs_two_models_with_the_same_coulomb(argon_pair):
    frames, a, _ = argon_pair
    with pytest.raises(ValueError, match="at least two models"):
        CommitteeForces([a], frames.topology)


@pytest.mark.slow
def test_md_with_a_committee_logs_the_deviation(argon_run, argon_pair, tmp_path):
    _, a, b = argon_pair
    data_file = argon_run / "segment_000" / "system.data"
    out = tmp_path / "md"
    args = ["md", "--committee", str(a), str(b), "--system", str(data_file), "--steps", "10", "--out", str(out)]
    assert main([*args, "--dump-every", "5", "--timestep", "0.5", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["committee"]["max_force_deviation"] > 0 and summary["checkpoint"] == [str(a), str(b)]
    table = np.loadtxt(out / "deviation.txt", ndmin=2)
    assert table[:, 0].tolist() == list(range(11)) and np.all(table[:, 1] >= table[:, 2]) and np.all(table[:, 2] > 0)
    assert summary["committee"]["max_force_deviation"] == pytest.approx(table[:, 1].max(), rel=1e-5)
    trajectory = read_lammps(data_file, out / "trajectory.lammpstrj")
    committee = CommitteeForces([a, b], trajectory.topology)
    for k in range(len(trajectory)):
        expected, _ = committee(trajectory.positions[k].astype(np.float64), trajectory.cells[k].astype(np.float64))
        assert np.abs(trajectory.forces[k] - expected).max() < 1e-4 * np.abs(expected).max() + 1e-6
        assert committee.last_deviation.max() == pytest.approx(table[5 * k, 1], rel=1e-4)


def _thermo(temperature, etotal, dt_fs=1.0):
    steps = np.arange(len(temperature))
    return np.column_stack([steps, temperature, etotal, steps * dt_fs, np.zeros(len(steps)), etotal])


def test_find_runaway_flags_heating_and_energy_climbs_with_the_step_they_began():
    rng = np.random.default_rng(1)
    steady = 300 + 5 * rng.standard_normal(2000)
    flat = -1000 + 0.5 * rng.standard_normal(2000)
    assert find_runaway(_thermo(steady, flat), 648, "nve", None, True) is None
    assert find_runaway(_thermo(steady, flat), 648, "nvt", 300.0, False) is None
    heating = steady.copy()
    heating[1000:] += np.linspace(0, 200, 1000)  # heats from step 1000
    found = find_runaway(_thermo(heating, flat), 648, "nve", None, True)
    assert found["quantity"] == "temperature" and 950 <= found["began_at_step"] < found["detected_at_step"] <= 1400
    assert "ran away" in found["message"] and "step" in found["message"]
    climbing = flat.copy()
    climbing[500:] += np.linspace(0, 100, 1500)  # 0.15 kcal/mol/atom over 1.5 ps
    found = find_runaway(_thermo(steady, climbing), 648, "nve", None, True)
    assert found["quantity"] == "energy" and 450 <= found["began_at_step"] < found["detected_at_step"]
    assert find_runaway(_thermo(steady, climbing), 648, "nve", None, False) is None  # no energy: not checked


@pytest.mark.slow
def test_md_warns_about_a_run_that_heats_up(argon_run, tmp_path, capsys):
    """A direct-force model with forces ten times argon's is not conservative: NVE heats up, and gnnmd md
    says so (summary, log.lammps and the terminal) with the step it began, still exiting 0."""
    frames = load_frames(argon_run)
    torch.manual_seed(0)
    model = build_model("eqforce", cutoff=6.0, hidden=16, layers=2, radial=8)
    rms = float(np.sqrt((frames.forces**2).mean()))
    path = save_checkpoint(
        tmp_path / "hot.pt", model, type_table=frames.topology.type_table(), normalisation={"force_scale": 10 * rms}
    )
    out = tmp_path / "md"
    data_file = argon_run / "segment_000" / "system.data"
    args = ["md", "--model", str(path), "--system", str(data_file), "--steps", "400", "--out", str(out)]
    assert main([*args, "--timestep", "2.0", "--dump-every", "100", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runaway"]["quantity"] == "temperature", summary["mean_temperature"]
    assert summary["warnings"] == [summary["runaway"]["message"]]
    assert "WARNING (gnnmd): the temperature ran away" in (out / "log.lammps").read_text()
    assert "gnnmd md: WARNING: the temperature ran away" in capsys.readouterr().err


def test_evaluate_a_committee(argon_run, argon_pair, tmp_path, capsys):
    """`gnnmd evaluate` with several models: the mean force's errors, each member's, and how the deviation
    ranks the errors, per atom and per frame."""
    frames, a, b = argon_pair
    out = tmp_path / "committee.json"
    args = ["evaluate", "--model", str(a), str(b), "--data", str(argon_run), "--out", str(out), "--no-progress"]
    assert main([*args, "--deviation-threshold", "0.01"]) == 0
    result = json.loads(out.read_text())
    committee = result["committee"]
    assert committee["members"] == [str(a), str(b)] and len(committee["member_force_mae"]) == 2
    assert committee["per_atom"]["count_above"] + committee["per_atom"]["count_below"] == len(frames) * 64
    assert committee["per_frame"]["count_above"] + committee["per_frame"]["count_below"] == len(frames)
    assert -1 <= committee["per_atom"]["rank_correlation"] <= 1 and committee["per_atom"]["threshold"] == 0.01
    # the mean of two members cannot be worse than the worse member
    assert result["force_mae"] <= max(committee["member_force_mae"]) + 1e-9
    assert "rank correlation" in capsys.readouterr().out
