"""Inference keeps its promises: one composition of the learned part and PME Coulomb serves every caller
(MD's force function, committees, ASE, virials, evaluation), the same model/system check serves gnnmd md
and gnnmd evaluate, ASE refuses Atoms of another system, a checkpoint with non-finite values is refused at
load, and gnnmd learn refuses a committee without distinct members and a --jobs below 1."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from ase import Atoms

from gnnmd.ase import KCAL_PER_MOL, GnnmdCalculator
from gnnmd.cli import main
from gnnmd.data import FrameDataset, load_frames
from gnnmd.inference.committee import CommitteeForces
from gnnmd.inference.evaluate import model_virials
from gnnmd.inference.forces import CoulombPart, ModelForces, with_coulomb
from gnnmd.models.checkpoint import load_model, save_checkpoint
from gnnmd.models.electrostatics import Electrostatics
from gnnmd.models.nequip import NequIP


def _pme_nequip(frames, path, seed: int):
    """An untrained nequip water model saved with PME settings: it stands for reference minus Coulomb."""
    torch.manual_seed(seed)
    model = NequIP(channels=4, l_max=1, layers=1, cutoff=3.5)
    normalisation = {"force_scale": float(np.sqrt(np.mean(frames.forces**2)))}
    model.set_normalisation(normalisation)
    normalisation["model_fit"] = model.fit_priors(frames)
    config = Electrostatics.for_system(frames.topology, frames.mean_cell()).config()
    return save_checkpoint(path, model, type_table=frames.topology.type_table(), normalisation=normalisation,
                           electrostatics=config)  # fmt: skip


@pytest.fixture(scope="module")
def water_pme(water_run, tmp_path_factory):
    frames = load_frames(water_run)
    folder = tmp_path_factory.mktemp("promises_inference")
    return frames, _pme_nequip(frames, folder / "a.pt", 1), _pme_nequip(frames, folder / "b.pt", 2)


def _atoms(frames, k: int) -> Atoms:
    names = np.asarray(frames.topology.table_names)[frames.topology.types]
    return Atoms(symbols=list(names), positions=frames.positions[k].astype(np.float64),
                 cell=frames.cells[k].astype(np.float64), pbc=True)  # fmt: skip


def test_every_caller_gets_the_learned_part_plus_the_one_coulomb_part(water_run, water_pme):
    frames, a, b = water_pme
    positions, cell = frames.positions[2].astype(np.float64), frames.cells[2].astype(np.float64)
    learned = ModelForces(a, frames.topology, electrostatics=False, skin=0.0)
    learned.virial = True
    f_learned, e_learned = learned(positions, cell)
    v_learned = learned.last_virial
    part = CoulombPart.of(learned.info.electrostatics, frames.topology, frames.mean_cell())
    e_coulomb, f_coulomb = (t.numpy() for t in part.frame(torch.from_numpy(positions), torch.from_numpy(cell)))
    v_coulomb = part.virial(positions, cell)
    assert np.abs(f_coulomb).max() > 1.0 and np.abs(v_coulomb).max() > 1.0  # the Coulomb part is there
    # the force function of MD (torch-pme Coulomb), with its virial
    full = ModelForces(a, frames.topology, skin=0.0)
    full.virial = True
    full.prepare(frames.mean_cell())  # the same PME mesh as `part` (the data is NPT: cells differ a little)
    forces, energy = full(positions, cell)
    assert np.allclose(forces, f_learned + f_coulomb, atol=1e-9)
    assert energy == pytest.approx(e_learned + float(e_coulomb), abs=1e-8)
    assert np.allclose(full.last_virial, v_learned + v_coulomb, atol=1e-8)
    # ASE: the same numbers in eV (its PME mesh is chosen for the first cell it sees: 1e-5 apart)
    atoms = _atoms(frames, 2)
    atoms.calc = GnnmdCalculator(model=a, topology=water_run)
    assert np.allclose(atoms.get_forces() / KCAL_PER_MOL, forces, atol=1e-4)
    assert atoms.get_potential_energy() / KCAL_PER_MOL == pytest.approx(energy, abs=1e-4)
    stress = -full.last_virial * KCAL_PER_MOL / atoms.get_volume()
    assert np.allclose(atoms.get_stress(), stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], rtol=1e-4, atol=1e-9)
    # `gnnmd evaluate --stress`'s virials (the whole dataset's PME mesh: its cells are all this one)
    assert np.allclose(model_virials(a, frames, [2])[0], full.last_virial, atol=1e-6)
    # a committee adds the part once to the members' mean
    committee = CommitteeForces([a, b], frames.topology)
    committee.virial = True
    mean, mean_energy = committee(positions, cell)
    other = ModelForces(b, frames.topology, electrostatics=False)
    other.virial = True
    f_other, e_other = other(positions, cell)
    assert np.allclose(mean, (f_learned + f_other) / 2 + f_coulomb, atol=1e-4)
    assert mean_energy == pytest.approx((e_learned + e_other) / 2 + float(e_coulomb), abs=1e-3)
    assert np.allclose(committee.last_virial, (v_learned + other.last_virial) / 2 + v_coulomb, atol=1e-3)
    # evaluation's module of graph batches: the network plus the same part
    model, info = load_model(a)
    graph = FrameDataset(frames, info.cutoff, [2])[0]
    out = with_coulomb(model, info.electrostatics, frames.topology, frames.mean_cell())(graph)
    assert np.allclose(out["coulomb_forces"].double().numpy(), f_coulomb, atol=1e-4)
    assert np.allclose(out["forces"].detach().double().numpy(), forces, atol=1e-3 * np.abs(forces).max())


def test_ase_refuses_atoms_of_another_system(water_run, water_pme, capsys):
    frames, a, _ = water_pme
    calculator = GnnmdCalculator(model=a, topology=water_run)
    argon_like = _atoms(frames, 0)
    argon_like.set_chemical_symbols(["Ar"] * len(argon_like))  # gave -61.1 instead of -83.2 eV
    argon_like.calc = calculator
    with pytest.raises(ValueError, match=r"atom 0 is Ar, the topology's is O") as refused:
        argon_like.get_potential_energy()
    assert str(water_run) in str(refused.value) and "\n" not in str(refused.value)
    swapped = _atoms(frames, 0)
    symbols = swapped.get_chemical_symbols()
    symbols[0], symbols[1] = symbols[1], symbols[0]  # O and H exchanged: another order
    swapped.set_chemical_symbols(symbols)
    swapped.calc = calculator
    with pytest.raises(ValueError, match="atom 0 is H, the topology's is O"):
        swapped.get_forces()
    short = _atoms(frames, 0)[:-3]
    short.calc = calculator
    with pytest.raises(
        ValueError, match=f"have {frames.topology.n_atoms - 3} atoms, the topology {frames.topology.n_atoms}"
    ):
        short.get_forces()
    for broken in ("pbc", "cell", "nan"):
        atoms = _atoms(frames, 0)
        if broken == "pbc":
            atoms.pbc = [True, True, False]
        elif broken == "cell":
            atoms.cell = [[atoms.cell[0, 0], 0, 0], [0, atoms.cell[1, 1], 0], [0, 0, 0]]
        else:
            atoms.positions[5, 1] = np.nan
        atoms.calc = calculator
        with pytest.raises(ValueError, match="pbc=True|non-finite"):
            atoms.get_forces()
    good = _atoms(frames, 0)
    good.calc = calculator
    assert np.isfinite(good.get_potential_energy())  # the system itself still runs


@pytest.mark.parametrize("where", ["type_keys", "type_scale", "weight"])
def test_a_checkpoint_with_non_finite_values_is_refused_at_load(water_run, water_pme, tmp_path, capsys, where):
    _, a, _ = water_pme
    payload = torch.load(a, weights_only=True)
    state = payload["state_dict"]
    key = where if where != "weight" else next(k for k in state if k.endswith("weight") and state[k].numel() > 1)
    state[key].view(-1)[0] = float("nan") if where != "type_scale" else float("inf")
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(ValueError, match=f"bad.pt: non-finite values .* in {key}"):
        load_model(bad)
    assert main(["evaluate", "--model", str(bad), "--data", str(water_run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.pt" in err and key in err and len(err.splitlines()) == 1
    load_model(a)  # the file it came from loads


def test_evaluate_refuses_what_md_refuses_with_the_same_reason(water_run, argon_model, tmp_path, capsys):
    data_file = water_run / "segment_000" / "system.data"
    md = ["md", "--model", str(argon_model), "--system", str(data_file), "--steps", "2", "--out", str(tmp_path / "md")]
    assert main([*md, "--no-progress"]) == 2
    md_reason = capsys.readouterr().err.strip()
    out = tmp_path / "eval.json"
    evaluate = ["evaluate", "--model", str(argon_model), "--data", str(water_run), "--out", str(out), "--no-progress"]
    assert main(evaluate) == 2
    evaluate_reason = capsys.readouterr().err.strip()
    assert len(evaluate_reason.splitlines()) == 1 and not out.exists()
    reason = md_reason.split(": atom type ", 1)[1]
    assert "is unknown to the model" in reason and evaluate_reason.split(": atom type ", 1)[1] == reason
    # zero-shot on purpose: both take --allow-unknown-types
    assert main([*evaluate, "--allow-unknown-types"]) == 0 and out.is_file()


def test_learn_refuses_a_committee_without_distinct_members(argon_run, argon_model, tmp_path, capsys):
    copy = tmp_path / "copy.pt"
    shutil.copyfile(argon_model, copy)
    base = ["learn", "--data", str(argon_run), "--rounds", "1", "--no-progress"]
    for models, why in (([argon_model, argon_model], "is given twice"), ([argon_model, copy], "the same weights")):
        out = tmp_path / f"learn_{len(why)}"
        assert main([*base, "--models", *map(str, models), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and "distinct members" in err and len(err.splitlines()) == 1
        assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("command", ["learn", "reproduce"])
def test_jobs_below_one_is_refused_when_parsed(argon_run, argon_model, tmp_path, capsys, command):
    if command == "learn":
        argv = ["learn", "--data", str(argon_run), "--models", str(argon_model), str(argon_model)]
        argv += ["--out", str(tmp_path / "learn")]
    else:
        argv = ["reproduce", "--work", str(tmp_path / "work")]
    for jobs in ("0", "-1"):
        with pytest.raises(SystemExit) as stopped:
            main([*argv, "--jobs", jobs])
        assert stopped.value.code == 2
        assert f"--jobs: must be at least 1, got {jobs}" in capsys.readouterr().err
    assert not (tmp_path / "learn").exists() and not (tmp_path / "work").exists()
