"""A GNN correction over a CG prior (gnnmd.lammps.cg_prior, docs/coarse_grain.md): the residual dataset is
the mapped forces minus a real LAMMPS rerun of the fit, a model trained on it carries the prior, and
`gnnmd md` runs prior + model, on one MPI rank and on two, from a moved fit folder."""

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
from gnnmd.data.coarse_grain import coarse_grain
from gnnmd.data.forcefield import ForceField
from gnnmd.data.reader import read_manifest, read_run, read_topology
from gnnmd.inference.forces import ModelForces
from gnnmd.lammps.engine import load_system_commands, start_lammps
from gnnmd.lammps.label import label_frames
from gnnmd.lammps.md_callback import box_matrix
from gnnmd.models.checkpoint import read_info
from gnnmd.models.electrostatics import PMESettings

pytestmark = pytest.mark.slow
MPIEXEC = Path(sys.executable).parent / "mpiexec"
COM = "molecules:\n  - name: water\n    types: [O, H, H]\n    sites:\n      - {name: W, atoms: [0, 1, 2], placement: com}\n"
ATOMS = COM.replace("{name: W, atoms: [0, 1, 2], placement: com}", "{name: O, atoms: [0], placement: atom}\n"
                    "      - {name: H, atoms: [1], placement: atom}\n      - {name: H, atoms: [2], placement: atom}")  # fmt: skip
CUTOFF = 3.5  # the model's: MD on two ranks needs a box (9.5 A) over twice cutoff + skin


@pytest.fixture(scope="module")
def cg(water_run, tmp_path_factory):
    """The water run mapped one site per molecule, its MS-CG fit (cutoff 4.5 A) and the residual."""
    folder = tmp_path_factory.mktemp("cgprior")
    (folder / "com.yaml").write_text(COM)
    coarse_grain(water_run, folder / "com.yaml", folder / "cg")
    assert (
        main(["coarse-grain", "fit", "--data", str(folder / "cg"), "--out", str(folder / "fit"), "--cutoff", "4.5"])
        == 0
    )
    args = ["coarse-grain", "residual", "--data", str(folder / "cg"), "--fit", str(folder / "fit")]
    assert main([*args, "--out", str(folder / "resid")]) == 0
    return folder


@pytest.fixture(scope="module")
def model(cg):
    """nequip trained one epoch on the residual by `gnnmd train`."""
    args = ["train", "--data", str(cg / "resid"), "--model", "nequip", "--electrostatics", "none", "--epochs", "1",
            "--hyper", "channels=4", "--hyper", "layers=2", "--cutoff", str(CUTOFF), "--runs-dir", str(cg / "runs"),
            "--name", "resid", "--threads", "1", "--no-progress", "--quiet"]  # fmt: skip
    assert main(args) == 0
    return cg / "runs" / "resid" / "best.pt"


def _dump(path: Path) -> list[np.ndarray]:
    """Forces of every frame of a dump whose last three columns are fx fy fz, in id order."""
    frames = []
    for block in path.read_text().split("ITEM: TIMESTEP\n")[1:]:
        lines = block.splitlines()
        n, columns = int(lines[2]), lines[7].split()[2:]
        rows = np.array([line.split() for line in lines[8 : 8 + n]], dtype=np.float64)
        frames.append(rows[np.argsort(rows[:, columns.index("id")])][:, -3:])
    return frames


def test_residual_plus_a_rerun_of_the_fit_is_the_mapped_forces(cg, tmp_path):
    mapped, residual = read_run(cg / "cg", progress=False), read_run(cg / "resid", progress=False)
    manifest, fit_ff = read_manifest(cg / "resid"), ForceField.read(cg / "fit" / "cg.ff")
    assert manifest["source"] == "coarse-grain-residual" and manifest["prior"]["fit"] == str(cg / "fit")
    assert manifest["prior"]["force_field"] == fit_ff.to_dict()
    assert list(manifest["prior"]["tables"].values()) == [(cg / "fit" / "cg.table").read_text()]
    prior_forces, prior_energies = [], []
    for k, segment in enumerate(read_manifest(cg / "cg")["segments"]):  # the plain labelling rerun of cg.ff
        steps = residual.timesteps[residual.segments == k]
        label_frames(cg / "fit" / "cg.data", fit_ff, cg / "cg" / segment["dump_file"], steps, tmp_path / f"s{k}")
        prior_forces += _dump(tmp_path / f"s{k}" / "frames.lammpstrj")
        prior_energies.append(np.loadtxt(tmp_path / f"s{k}" / "energy.txt", ndmin=2)[:, 1])
    prior_forces = np.stack(prior_forces)
    assert np.abs(prior_forces).max() > 1.0  # the prior is there to take off
    assert np.allclose(residual.forces + prior_forces, mapped.forces, atol=1e-4)
    assert np.allclose(residual.energies + np.concatenate(prior_energies), mapped.energies, atol=1e-4)
    assert np.array_equal(residual.positions, mapped.positions) and np.array_equal(residual.cells, mapped.cells)
    fit = json.loads((cg / "fit" / "fit.json").read_text())  # LAMMPS' table gives the fit's own residual
    assert manifest["residual"]["rms_residual_force"] == pytest.approx(fit["rms_residual_force"], rel=1e-3)


def test_residual_and_fit_refuse_the_wrong_dataset(cg, capsys):
    args = ["coarse-grain", "residual", "--data", str(cg / "resid"), "--fit", str(cg / "fit"), "--out", str(cg / "r2")]
    assert main(args) == 2 and "already a residual" in capsys.readouterr().err and not (cg / "r2").exists()
    assert main(["coarse-grain", "fit", "--data", str(cg / "resid"), "--out", str(cg / "f2")]) == 2
    assert "residual" in capsys.readouterr().err


def test_a_model_trained_on_the_residual_carries_the_prior(cg, model, tmp_path):
    prior = read_info(model).prior
    assert prior == read_manifest(cg / "resid")["prior"] and prior["fit"] == str(cg / "fit")
    out = tmp_path / "eval.json"
    assert (
        main(["evaluate", "--model", str(model), "--data", str(cg / "resid"), "--out", str(out), "--no-progress"]) == 0
    )
    payload = torch.load(model, weights_only=True)
    del payload["prior"]  # a checkpoint from before priors
    torch.save(payload, tmp_path / "old.pt")
    assert read_info(tmp_path / "old.pt").prior is None


def test_a_bonded_prior_of_charged_sites_is_refused_with_pme(water_run, cg, model, tmp_path, capsys):
    """One site per atom: the prior has bonds and angles (LAMMPS' residual is the fit's again), and the
    sites' charges train with PME by default, refused for a residual, as is MD of a checkpoint with both
    (gnnmd md runs the prior's table, not LAMMPS' Coulomb beside it)."""
    (tmp_path / "atoms.yaml").write_text(ATOMS)
    coarse_grain(water_run, tmp_path / "atoms.yaml", tmp_path / "cg")
    fit, resid = tmp_path / "fit", tmp_path / "resid"
    assert main(["coarse-grain", "fit", "--data", str(tmp_path / "cg"), "--out", str(fit), "--cutoff", "4"]) == 0
    assert (
        main(["coarse-grain", "residual", "--data", str(tmp_path / "cg"), "--fit", str(fit), "--out", str(resid)]) == 0
    )
    expected = json.loads((fit / "fit.json").read_text())["rms_residual_force"]
    assert read_manifest(resid)["residual"]["rms_residual_force"] == pytest.approx(expected, rel=1e-3)
    capsys.readouterr()
    args = ["train", "--data", str(resid), "--model", "nequip", "--epochs", "1", "--runs-dir", str(tmp_path)]
    assert main([*args, "--no-progress"]) == 2 and "--electrostatics none" in capsys.readouterr().err
    payload = torch.load(model, weights_only=True)
    payload["electrostatics"] = PMESettings().to_dict()
    torch.save(payload, tmp_path / "pme.pt")
    assert main(_md_args(tmp_path / "pme.pt", cg / "fit" / "cg.data", tmp_path / "md")) == 2
    assert "--electrostatics none" in capsys.readouterr().err


@pytest.fixture(scope="module")
def step_zero(cg, model):
    """Potential energy and forces of FIT/cg.data under the prior (LAMMPS, cg.ff) plus the model's."""
    lmp = start_lammps()
    lmp.commands_list(load_system_commands(cg / "fit" / "cg.data", ForceField.read(cg / "fit" / "cg.ff")) + ["run 0"])
    energy, cell = lmp.get_thermo("pe"), box_matrix(lmp)
    forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3).copy()
    positions = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(-1, 3).copy()
    lmp.close()
    topology = read_topology(cg / "cg" / "segment_000" / "system.data")
    model_forces, model_energy = ModelForces(model, topology, precision="float64")(positions, cell)
    assert np.abs(model_forces).max() > 1e-3 and abs(model_energy) > 1e-3  # the model adds something
    return energy + model_energy, forces + model_forces


def _md_args(model: Path, system: Path, out: Path) -> list[str]:
    return ["md", "--model", str(model), "--system", str(system), "--steps", "50", "--ensemble", "nvt",
            "--temperature", "300", "--out", str(out), "--precision", "float64", "--dump-every", "10", "--no-progress"]  # fmt: skip


def _first_step(out: Path) -> tuple[float, np.ndarray]:
    thermo = np.loadtxt(out / "thermo.txt", ndmin=2)
    assert thermo[0, 0] == 0
    return float(thermo[0, 2]), _dump(out / "trajectory.lammpstrj")[0]


def test_md_runs_the_prior_plus_the_model_from_a_moved_fit(cg, model, step_zero, tmp_path):
    moved = tmp_path / "moved_fit"
    shutil.move(cg / "fit", moved)  # MD takes the prior's tables from the checkpoint, not from the fit
    try:
        assert main(_md_args(model, moved / "cg.data", tmp_path / "md")) == 0
    finally:
        shutil.move(moved, cg / "fit")
    energy, forces = _first_step(tmp_path / "md")
    assert energy == pytest.approx(step_zero[0], rel=1e-7)
    assert np.allclose(forces, step_zero[1], atol=1e-5)
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert summary["failed_at_step"] is None and summary["prior"]["fit"] == str(cg / "fit")
    assert (tmp_path / "md" / "prior" / "cg.table").read_text() == (cg / "fit" / "cg.table").read_text()


@pytest.mark.skipif(not MPIEXEC.is_file(), reason="no mpiexec in this environment (the mpich wheel has one)")
def test_md_on_two_ranks_has_the_same_first_step(cg, model, step_zero, tmp_path):
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "gnnmd.cli", *_md_args(model, cg / "fit" / "cg.data",
                                                                                       tmp_path / "md")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    energy, forces = _first_step(tmp_path / "md")
    assert energy == pytest.approx(step_zero[0], rel=1e-5)
    assert np.allclose(forces, step_zero[1], atol=1e-5)
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert summary["mpi_ranks"] == 2 and summary["prior"]["fit"] == str(cg / "fit")
