"""The ASE calculator: forces equal `gnnmd evaluate`'s after unit conversion, the stress is the strain
derivative of the energy (learned part and PME Coulomb), and a direct-force model gives forces only."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from gnnmd.ase import KCAL_PER_MOL, GnnmdCalculator
from gnnmd.cli import main
from gnnmd.data import load_frames
from gnnmd.inference.evaluate import evaluate_checkpoint


@pytest.fixture(scope="module")
def pme_model(water_run, tmp_path_factory):
    runs = tmp_path_factory.mktemp("ase_runs")
    args = ["train", "--data", str(water_run), "--model", "nequip", "--hyper", "channels=4", "--hyper", "layers=1"]
    args += ["--cutoff", "3.5", "--epochs", "1", "--electrostatics", "pme", "--runs-dir", str(runs), "--name", "m"]
    assert main([*args, "--threads", "1", "--no-progress", "--hyper", "repulsion=1.0"]) == 0
    return runs / "m" / "best.pt"


def _atoms(frames, k: int) -> Atoms:
    names = np.asarray(frames.topology.table_names)[frames.topology.types]
    return Atoms(symbols=list(names), positions=frames.positions[k].astype(np.float64),
                 cell=frames.cells[k].astype(np.float64), pbc=True)  # fmt: skip


def test_ase_forces_equal_gnnmd_evaluate_and_stress_is_the_strain_derivative(water_run, pme_model):
    frames = load_frames(water_run)
    atoms = _atoms(frames, 3)
    atoms.calc = GnnmdCalculator(model=pme_model, topology=water_run)
    forces = atoms.get_forces() / KCAL_PER_MOL
    result, _ = evaluate_checkpoint(pme_model, water_run, progress=False)
    n = frames.topology.n_atoms
    expected = result["pred"][3 * n : 4 * n]
    assert np.abs(forces - expected).max() < 1e-3 * np.abs(expected).max()
    stress = atoms.get_stress()
    numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-3)
    assert np.abs(stress).max() > 1e-4  # eV/A^3: the check is not empty
    assert np.allclose(stress, numerical, rtol=1e-2, atol=1e-2 * np.abs(numerical).max())
    assert isinstance(atoms.get_potential_energy(), float)


def test_ase_with_a_direct_force_model_gives_forces_only(argon_run, argon_model):
    frames = load_frames(argon_run)
    atoms = _atoms(frames, 0)
    atoms.calc = GnnmdCalculator(model=argon_model, topology=argon_run / "segment_000" / "system.data")
    assert atoms.get_forces().shape == (64, 3)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_potential_energy()


def test_ase_velocity_verlet_conserves_energy(water_run, pme_model):
    """20 steps of ASE's Velocity Verlet with the calculator (0.25 fs): total energy within 2e-3 eV per
    atom while kinetic and potential energy trade."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    frames = load_frames(water_run)
    atoms = _atoms(frames, 0)
    atoms.set_masses(np.asarray(frames.topology.table_masses)[frames.topology.types])
    atoms.calc = GnnmdCalculator(model=pme_model, topology=water_run)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    total, kinetic = [], []
    for _ in range(20):
        dynamics.run(1)
        kinetic.append(atoms.get_kinetic_energy())
        total.append(kinetic[-1] + atoms.get_potential_energy())
    n = len(atoms)
    assert (max(total) - min(total)) / n < 2e-3
    assert (max(kinetic) - min(kinetic)) / n > 5 * (max(total) - min(total)) / n  # energy was exchanged
