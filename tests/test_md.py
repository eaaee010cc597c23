"""MD driven by a model inside LAMMPS (fix external): the integrated forces are the model's, and bad
inputs stop before LAMMPS starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import load_frames, read_lammps
from gnnmd.inference.forces import ModelForces
from gnnmd.models import build_model
from gnnmd.models.checkpoint import save_checkpoint


@pytest.mark.slow
def test_md_integrates_the_model_forces(argon_run, argon_model, tmp_path):
    data_file = argon_run / "segment_000" / "system.data"
    out = tmp_path / "md"
    args = ["md", "--model", str(argon_model), "--system", str(data_file), "--steps", "20", "--out", str(out)]
    assert main([*args, "--timestep", "1.0", "--dump-every", "5", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["atoms"] == 64 and not summary["blown_up"]
    trajectory = read_lammps(data_file, out / "trajectory.lammpstrj")
    assert len(trajectory) == 5  # steps 0, 5, 10, 15, 20
    assert not np.allclose(trajectory.positions[0], trajectory.positions[-1])  # atoms moved
    model_forces = ModelForces(argon_model, trajectory.topology)
    for k in range(len(trajectory)):
        expected, _ = model_forces(trajectory.positions[k].astype(np.float64), trajectory.cells[k].astype(np.float64))
        assert np.abs(expected).mean() > 1e-2  # the check below would be empty with zero forces
        assert np.abs(trajectory.forces[k] - expected).max() < 1e-4 * np.abs(expected).max() + 1e-6


def test_md_refuses_a_system_with_unknown_types(water_run, argon_model, tmp_path, capsys):
    out = tmp_path / "md"
    water_data = water_run / "segment_000" / "system.data"
    code = main(["md", "--model", str(argon_model), "--system", str(water_data), "--steps", "5", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "system.data: atom type 1 (O: q=-0.82" in err and "unknown to the model" in err
    assert not out.exists()  # stopped before LAMMPS started


def test_md_refuses_a_bad_checkpoint(argon_run, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00not a checkpoint")
    out = tmp_path / "md"
    data_file = argon_run / "segment_000" / "system.data"
    assert main(["md", "--model", str(broken), "--system", str(data_file), "--steps", "5", "--out", str(out)]) == 2
    assert "broken.pt: not a readable gnnmd checkpoint" in capsys.readouterr().err
    assert not out.exists()


def test_md_records_a_model_failure_as_a_blown_up_run(argon_run, tmp_path, capsys):
    """Non-finite model forces end the run as a result (summary `blown_up`, the step and the reason; exit
    code 1) instead of a crash that would lose the trajectory."""
    frames = load_frames(argon_run)
    model = build_model("eqforce", cutoff=6.0, hidden=16, layers=2, radial=8)
    next(model.parameters()).data.fill_(1e38)  # finite weights (a NaN one is refused at load), overflowing forces
    path = save_checkpoint(tmp_path / "nan.pt", model, type_table=frames.topology.type_table(), normalisation={})
    out = tmp_path / "md"
    data_file = argon_run / "segment_000" / "system.data"
    args = ["md", "--model", str(path), "--system", str(data_file), "--steps", "10", "--out", str(out), "--no-progress"]
    assert main(args) == 1
    assert "blew up at step 0" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["blown_up"] and summary["failed_at_step"] == 0 and "not finite" in summary["failure"]
    assert (out / "trajectory.lammpstrj").is_file()


def test_rdf_command(argon_run, tmp_path, capsys):
    segment = argon_run / "segment_000"
    prefix = tmp_path / "argon_rdf"
    dump = str(segment / "frames.lammpstrj")
    args = ["rdf", "--reference", dump, "--trajectory", dump, "--data", str(segment / "system.data")]
    assert main([*args, "--out", str(prefix)]) == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert list(report) == ["Ar-Ar"]
    row = report["Ar-Ar"]
    assert 3.4 < row["peak_r"] < 4.2 and row["peak_g"] > 1.5  # liquid argon's first shell
    assert row["peak_r"] == row["peak_r_ref"] and row["integrated_abs_diff"] == 0.0
    assert prefix.with_suffix(".png").stat().st_size > 1000


@pytest.mark.slow
def test_nve_conserves_the_energy_of_a_conservative_model(argon_run, tmp_path):
    """The energy model (forces = -dE/dr, smooth cutoff) driven by LAMMPS' velocity Verlet: with a small
    timestep the total energy stays within 1e-3 kcal/mol per atom while potential and kinetic energy trade."""
    frames = load_frames(argon_run)
    model = build_model("nequip", channels=8, layers=2, cutoff=6.0)
    rms = float(np.sqrt((frames.forces**2).mean()))
    path = tmp_path / "nequip.pt"
    save_checkpoint(path, model, type_table=frames.topology.type_table(), normalisation={"force_scale": 20 * rms})
    out = tmp_path / "md"
    data_file = argon_run / "segment_000" / "system.data"
    args = ["md", "--model", str(path), "--system", str(data_file), "--steps", "20", "--out", str(out)]
    assert main([*args, "--timestep", "0.5", "--temperature", "300", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_energy"] and not summary["blown_up"]
    _, _, pe, _, ke, etotal = np.loadtxt(out / "thermo.txt", comments="#", ndmin=2).T[:6]
    assert len(etotal) == 21
    drift = np.abs(etotal - etotal[0]).max() / 64
    assert drift < 1e-3, drift
    assert (pe.max() - pe.min()) / 64 > 10 * drift  # forces did work: the check is not empty
    assert summary["max_abs_energy_change_per_atom"] == pytest.approx(drift)


def test_rdf_peak_is_not_quantised_to_the_bins():
    """The peak of a sampled Gaussian is found between bins, to well under a bin width."""
    from gnnmd.analysis.rdf import peak

    r = np.arange(0.0, 8.0, 0.05) + 0.025
    for centre in (2.71, 2.737, 2.76):
        g = 3.0 * np.exp(-0.5 * ((r - centre) / 0.12) ** 2)
        position, height = peak(r, g)
        assert abs(position - centre) < 0.005 and abs(height - 3.0) < 0.05


def test_keep_freed_memory_tunes_glibc():
    """gnnmd keeps a step's freed memory mapped (gnnmd/memory.py); on glibc the tuning must take."""
    import platform

    from gnnmd.memory import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: nothing to tune")
    assert keep_freed_memory() is True and keep_freed_memory() is True


@pytest.mark.slow
def test_npt_with_an_energy_model_moves_the_box_and_refuses_models_without_a_virial(
    argon_run, argon_model, tmp_path, capsys
):
    """NPT takes the energy model's virial (fix external): the box breathes, the summary has the density;
    a direct-force model has no virial and is refused before LAMMPS starts."""
    frames = load_frames(argon_run)
    torch.manual_seed(0)
    model = build_model("nequip", channels=8, layers=2, cutoff=6.0, repulsion=1.0)
    normalisation = {"model_fit": model.fit_priors(frames)}
    path = save_checkpoint(
        tmp_path / "m.pt", model, type_table=frames.topology.type_table(), normalisation=normalisation
    )
    data_file = argon_run / "segment_000" / "system.data"
    out = tmp_path / "npt"
    args = ["md", "--model", str(path), "--system", str(data_file), "--steps", "60", "--out", str(out)]
    assert main([*args, "--ensemble", "npt", "--temperature", "90", "--pressure", "1000", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    volume = np.loadtxt(out / "thermo.txt", comments="#", ndmin=2)[:, 6]
    assert summary["ensemble"] == "npt" and volume.std() > 1e-3 * volume.mean()
    assert summary["mean_density_g_cm3"] == pytest.approx(64 * 39.948 / volume.mean() * 1.66053907, rel=1e-6)
    code = main(["md", "--model", str(argon_model), "--system", str(data_file), "--steps", "5", "--out",
                 str(tmp_path / "refused"), "--ensemble", "npt", "--temperature", "90"])  # fmt: skip
    assert code == 2 and "NPT needs the model's virial" in capsys.readouterr().err
