"""`gnnmd md` with a model trained with PME: LAMMPS computes the Coulomb part (coul/long + pppm with the
model's special_bonds exclusions) and the model the rest. Its total forces and energy are those of
torch-pme + model (the sum training and evaluation use), and NVE conserves energy as well as with
torch-pme's Coulomb."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import coulomb_cache, load_frames
from gnnmd.data.reader import read_topology
from gnnmd.inference.forces import ModelForces
from gnnmd.lammps.md_commands import coulomb_settings
from gnnmd.models.checkpoint import save_checkpoint
from gnnmd.models.electrostatics import Electrostatics
from gnnmd.models.nequip import NequIP

ACCURACIES = (1e-5, 1e-6)  # the default PME accuracy and a tighter one


@pytest.fixture(scope="module")
def pme_models(water_run, tmp_path_factory):
    """An untrained nequip water model with its priors fitted on reference minus PME Coulomb, saved with
    PME settings of each accuracy (the same weights): {accuracy: checkpoint}."""
    frames = load_frames(water_run)
    electrostatics = Electrostatics.for_system(frames.topology, frames.mean_cell())
    cache = coulomb_cache(frames, None, electrostatics, progress=False)
    torch.manual_seed(0)
    model = NequIP(channels=8, l_max=1, layers=2, cutoff=4.0)
    normalisation = {"force_scale": float(np.sqrt(np.mean((frames.forces - cache.forces) ** 2)))}
    model.set_normalisation(normalisation)
    normalisation["model_fit"] = model.fit_priors(frames, coulomb=cache)
    folder = tmp_path_factory.mktemp("pme_model")
    paths = {}
    for accuracy in ACCURACIES:
        config = Electrostatics.for_system(frames.topology, frames.mean_cell(), accuracy=accuracy).config()
        paths[accuracy] = save_checkpoint(
            folder / f"pme_{accuracy:g}.pt",
            model,
            type_table=frames.topology.type_table(),
            normalisation=normalisation,
            electrostatics=config,
        )
    return paths


def _md(model, data_file, out, steps, *extra) -> dict:
    args = ["md", "--model", str(model), "--system", str(data_file), "--steps", str(steps), "--out", str(out)]
    assert main([*args, "--no-progress", *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def _first_frame(dump) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, forces (float64, in atom id order) and the cell of the dump's first frame (an
    orthogonal box; the dump holds id mol type q x y z fx fy fz, sorted by id)."""
    lines = dump.read_text().splitlines()
    n_atoms = int(lines[3])
    bounds = np.array([line.split() for line in lines[5:8]], dtype=np.float64)
    columns = "id mol type q x y z fx fy fz".split()
    assert bounds.shape == (3, 2) and lines[8].split()[2:] == columns
    table = np.array([line.split() for line in lines[9 : 9 + n_atoms]], dtype=np.float64)
    assert np.array_equal(table[:, 0], np.arange(1, n_atoms + 1))
    return table[:, 4:7], table[:, 7:10], np.diag(bounds[:, 1] - bounds[:, 0])


@pytest.mark.parametrize("accuracy", ACCURACIES)
def test_lammps_pppm_plus_model_is_torch_pme_plus_model(water_run, pme_models, tmp_path, accuracy):
    """Step 0 of `gnnmd md` (LAMMPS' coul/long + pppm + the learned part through fix external): total
    forces within 0.01 kcal/mol/A of torch-pme + model, and the same potential energy. Every atom at the
    tight accuracy; at the default 1e-5 on average, with a looser bound per atom: there each of the two
    is within ~0.01-0.02 of the exact Ewald sum on its worst atoms (on 648 atoms they differ by 0.03)."""
    data_file = water_run / "segment_000" / "system.data"
    out = tmp_path / "md"
    summary = _md(pme_models[accuracy], data_file, out, 1, "--dump-every", "1")
    assert summary["electrostatics"] == "lammps-pppm" and not summary["blown_up"]
    assert summary["electrostatics_settings"] == {
        "method": "lammps-pppm",
        "real_space_cutoff": 8.0,
        "accuracy": accuracy,
        "special": [0.0, 0.0, 1.0],  # SPC/Fw's special_bonds coul 0.0 0.0 1.0 angle yes
        "angle": True,
        "interpolation_nodes": 4,
    }
    positions, lammps_forces, cell = _first_frame(out / "trajectory.lammpstrj")
    topology = read_topology(data_file)
    expected, energy = ModelForces(pme_models[accuracy], topology)(positions, cell)
    learned, _ = ModelForces(pme_models[accuracy], topology, electrostatics=False)(positions, cell)
    assert np.abs(expected - learned).mean() > 1.0  # the Coulomb part is there: the check is not empty
    error = np.abs(lammps_forces - expected)
    assert error.mean() < 0.01 / (10 if accuracy < 1e-5 else 1), error.mean()
    assert error.max() < (0.01 if accuracy < 1e-5 else 0.05), error.max()
    potential = np.loadtxt(out / "thermo.txt", comments="#", ndmin=2)[0, 2]
    assert potential == pytest.approx(energy, abs=0.01 if accuracy < 1e-5 else 0.05)


@pytest.mark.slow
def test_nve_with_lammps_coulomb_conserves_energy_like_torch_pme(water_run, pme_models, tmp_path):
    """The same short NVE run with LAMMPS' and with torch-pme's Coulomb. The untrained model's own
    integration error dominates the total energy's change (its molecules, held by no learned bonds,
    heat up), so what is compared is the difference: the total energies of the two runs move together to
    1e-4 kcal/mol per atom (PPPM's forces are not the exact gradient of its energy, but close), and the
    trajectories stay together."""
    data_file = water_run / "segment_000" / "system.data"
    runs = {}
    for coulomb in ("lammps", "torch-pme"):
        out = tmp_path / coulomb
        args = ["--timestep", "0.5", "--dump-every", "40", "--coulomb", coulomb]
        summary = _md(pme_models[1e-5], data_file, out, 40, *args)
        assert not summary["blown_up"] and summary["model_energy"]
        assert summary["electrostatics"] == {"lammps": "lammps-pppm", "torch-pme": "torch-pme"}[coulomb]
        thermo = np.loadtxt(out / "thermo.txt", comments="#", ndmin=2)
        last_frame = (out / "trajectory.lammpstrj").read_text().split("ITEM: TIMESTEP")[-1].splitlines()[9:]
        runs[coulomb] = summary, thermo, np.array([line.split() for line in last_frame], dtype=np.float64)
    n_atoms = runs["lammps"][0]["atoms"]
    change = {c: runs[c][0]["max_abs_energy_change_per_atom"] for c in runs}
    assert change["lammps"] < 1.1 * change["torch-pme"] + 1e-4, change
    etotal = {c: runs[c][1][:, 5] for c in runs}
    assert len(etotal["lammps"]) == 41
    apart = etotal["lammps"] - etotal["torch-pme"]
    assert np.abs(apart - apart[0]).max() / n_atoms < 1e-4, np.abs(apart - apart[0]).max() / n_atoms
    pe = runs["lammps"][1][:, 2]
    assert (pe.max() - pe.min()) / n_atoms > 0.1  # forces did work: the checks are not empty
    positions = {c: runs[c][2][:, 4:7] for c in runs}
    assert np.abs(positions["lammps"] - positions["torch-pme"]).max() < 1e-3  # after 40 steps


def test_coulomb_settings_only_for_a_pme_model_of_a_charged_system():
    charged, neutral = SimpleNamespace(charges=np.array([-0.82, 0.41, 0.41])), SimpleNamespace(charges=np.zeros(3))
    pme = {"cutoff": 9.0, "accuracy": 1e-6, "special": [0.0, 0.5], "smearing": 1.0}  # a checkpoint's settings
    assert coulomb_settings(pme, charged) == {
        "method": "lammps-pppm",
        "real_space_cutoff": 9.0,  # a format-1 checkpoint's name for it
        "accuracy": 1e-6,
        "special": [0.0, 0.5, 1.0],  # an older checkpoint's two weights: 1-4 pairs were full
        "angle": True,
        "interpolation_nodes": 4,
    }
    assert coulomb_settings({}, charged, "torch-pme") is None
    assert coulomb_settings({"smearing": 1.0}, charged, "torch-pme") == {
        "method": "torch-pme",
        "real_space_cutoff": 8.0,
        "accuracy": 1e-5,
        "special": [0.0, 0.0, 1.0],
        "angle": True,
        "interpolation_nodes": 4,
    }
    assert coulomb_settings(None, charged) is None  # trained without PME
    assert coulomb_settings(pme, neutral) is None  # no charges: no Coulomb term
    with pytest.raises(ValueError, match="coulomb must be one of lammps, torch-pme"):
        coulomb_settings(pme, charged, "ewald")
