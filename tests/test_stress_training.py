"""Training with a stress term (`--stress-weight`): the energy models' virial is minus the strain derivative
of their energy and the inference engine's, the targets are LAMMPS' virials minus the Coulomb part (kept in
the dataset folder), the loss and metrics use them, and a run without the term computes no virial."""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import (
    DataWarning,
    FrameDataset,
    chosen_frame_indices,
    coulomb_cache,
    load_frames,
    make_loader,
    reference_virial_cache,
    run_split,
)
from gnnmd.data.virial_cache import read_reference_virials, virial_cache_path
from gnnmd.inference.evaluate import model_virials, select_frames, virial_errors
from gnnmd.models.checkpoint import load_model, save_checkpoint
from gnnmd.models.electrostatics import Electrostatics
from gnnmd.models.nequip import NequIP
from gnnmd.models.states import StatesNequIP, _pairs_of_graphs
from gnnmd.train.augment import random_rotations, rotate_batch
from gnnmd.train.config import TrainConfig
from gnnmd.train.loop import batch_loss
from gnnmd.units import VOIGT_COLUMNS, VOIGT_ROWS

CUTOFF = 4.0
FAMILIES = ["nequip", "csnequip"]


@pytest.fixture(scope="module")
def water(water_run):
    return load_frames(water_run)


def _model(frames, family: str, coulomb=None):
    """A small untrained energy model with its normalisation and priors (walls, repulsion) fitted."""
    torch.manual_seed(0)
    if family == "csnequip":
        model = StatesNequIP(channels=8, l_max=1, layers=2, cutoff=CUTOFF, pair_cutoff=2.5)
    else:
        model = NequIP(channels=8, l_max=1, layers=2, cutoff=CUTOFF, repulsion=1.0)
    reference = frames.forces - (coulomb.forces if coulomb is not None else 0.0)
    normalisation = {"force_scale": float(np.sqrt(np.mean(reference**2)))}
    model.set_normalisation(normalisation)
    normalisation["model_fit"] = model.fit_priors(frames, coulomb=coulomb)
    return model, normalisation


def _batch(frames, indices, dtype=torch.float32):
    batch = next(iter(make_loader(FrameDataset(frames, CUTOFF, indices), batch_size=len(indices))))
    batch.pos, batch.cell = batch.pos.to(dtype), batch.cell.to(dtype)
    return batch


def _strained(batch, graph: int, strain: np.ndarray):
    """The batch with graph `graph`'s positions and cell rows taken r -> r (I + strain)."""
    strained = batch.clone()
    deformation = torch.eye(3, dtype=batch.pos.dtype) + torch.from_numpy(strain).to(batch.pos.dtype)
    atoms = strained.batch == graph
    strained.pos = strained.pos.clone()
    strained.pos[atoms] = strained.pos[atoms] @ deformation
    strained.cell = strained.cell.clone()
    strained.cell[graph] = strained.cell[graph] @ deformation
    return strained


def _edge_between_pairs(model, batch) -> None:
    """csnequip's g is continued below the data's shortest reduced distance x_e, where g'' (or, for an
    untrained g, g') jumps; fit_priors puts x_e exactly on a pair of the fitted frames, which a finite
    difference cannot straddle. So x_e goes midway into the widest gap among the batch's five shortest
    pairs: pairs below it still take the continuation, and none sits within the strain's reach of it."""
    graph = batch.batch
    pairs = _pairs_of_graphs(batch.x, batch.pos, batch.cell, graph, model.pair_cutoff)
    reduced = []
    for i, j, shifts in pairs:
        sigma = 0.5 * (batch.x[i, 2] + batch.x[j, 2])
        reduced.append(torch.linalg.vector_norm(batch.pos[j] - batch.pos[i] + shifts, dim=1) / sigma)
    shortest = torch.sort(torch.cat(reduced)).values[:5].numpy()
    k = int(np.argmax(np.diff(shortest)))
    assert shortest[k + 1] - shortest[k] > 1e-3  # far from the reach of h = 1e-5 (~1e-4 A)
    edge = 0.5 * (shortest[k] + shortest[k + 1])
    model.pair_edge.fill_(edge)
    model.pair_core.fill_(model.core_margin * edge)


@pytest.mark.parametrize("family", FAMILIES)
def test_virial_is_minus_the_strain_derivative_of_each_graphs_energy(water, family):
    """float64, a batch of two frames: each graph's virial is minus the central difference of its own
    energy under a symmetric strain of its positions and cell (h = 1e-5), to 1e-6; without the switch the
    output is the plain one (no virial, the same forces)."""
    model = _model(water, family)[0].double().eval()
    batch = _batch(water, [0, 7], torch.float64)
    if family == "csnequip":
        _edge_between_pairs(model, batch)
    out = model(batch, virial=True)
    plain = model(batch)
    assert "virial" not in plain and torch.equal(plain["forces"], out["forces"])
    assert torch.equal(plain["energy"], out["energy"])
    virial, h = out["virial"].numpy(), 1e-5
    assert virial.shape == (2, 3, 3) and np.allclose(virial, virial.transpose(0, 2, 1), rtol=0, atol=1e-12)
    for graph in (0, 1):
        for a, b in zip(VOIGT_ROWS, VOIGT_COLUMNS):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = h if a == b else h / 2
            plus, minus = (float(model(_strained(batch, graph, s))["energy"][graph]) for s in (strain, -strain))
            expected = -(plus - minus) / (2 * h)
            assert virial[graph, a, b] == pytest.approx(expected, rel=1e-6, abs=1e-7 * np.abs(virial).max())
    assert np.abs(virial[0] - virial[1]).max() > 1.0  # two different frames: per graph, not one sum
    assert np.abs(virial).max() > 10  # the check is not empty


@pytest.mark.parametrize("family", FAMILIES)
def test_virial_plus_coulomb_is_what_the_inference_engine_gives(water, family, tmp_path):
    """A PME checkpoint (float32): the network's virial of reference minus Coulomb plus the Coulomb cache's
    virial equals model_virials (the tabulated engine plus PME, what `gnnmd evaluate --stress` uses) to
    float32 round-off (seen: ~1e-6 of the largest component)."""
    electrostatics = Electrostatics.for_system(water.topology, water.mean_cell())
    cache = coulomb_cache(water, None, electrostatics, progress=False, virials=True)
    model, normalisation = _model(water, family, cache)
    path = save_checkpoint(tmp_path / f"{family}.pt", model, type_table=water.topology.type_table(),
                           normalisation=normalisation, electrostatics=electrostatics.config())  # fmt: skip
    loaded = load_model(path)[0].eval()
    indices = [2, 9]
    with torch.enable_grad():
        learned = loaded(_batch(water, indices), virial=True)["virial"].double().numpy()
    engine = model_virials(path, water, indices)
    assert np.allclose(
        cache.virials[indices], [electrostatics.virial(water.positions[k], water.cells[k]) for k in indices]
    )
    scale = np.abs(engine).max()
    assert np.abs(learned + cache.virials[indices] - engine).max() < 1e-5 * scale, np.abs(learned - engine).max()
    assert np.abs(learned).max() > 10


def test_augmentation_turns_the_virial_target_as_the_model_turns_its_virial(water):
    """rotate_batch's virial target R W R^T is what an equivariant model gives for the rotated frames."""
    model = _model(water, "nequip")[0].double().eval()
    batch = _batch(water, [1, 4], torch.float64)
    batch.edge_vec, batch.edge_attr, batch.y = batch.edge_vec.double(), batch.edge_attr.double(), batch.y.double()
    original = model(batch, virial=True)["virial"].detach()
    batch.virial = original.clone()
    u, _, vt = torch.linalg.svd(random_rotations(2, torch.Generator().manual_seed(3)).double())
    turned = rotate_batch(batch, u @ vt)  # orthogonal to float64 round-off
    assert (turned.virial - original).abs().max() > 1.0
    assert torch.allclose(model(turned, virial=True)["virial"], turned.virial, rtol=1e-9, atol=1e-9)


def test_the_stress_term_is_the_weighted_per_atom_virial_error(water):
    """batch_loss: stress_weight x the force loss's kind of (W_pred - W_ref) / atoms / force RMS over the six
    components; weight 0 leaves the loss as it was."""
    batch = _batch(water, [0, 3])
    atoms = water.topology.n_atoms
    rng = np.random.default_rng(0)
    batch.virial = torch.from_numpy(rng.normal(scale=50, size=(2, 3, 3)))
    out = {"forces": batch.y + 1.0, "energy": None, "virial": torch.zeros(2, 3, 3)}
    scale = torch.tensor(20.0)
    base = dict(data="x", loss="l1")
    plain = batch_loss(out, batch, TrainConfig(**base), scale, penalise=False)[0]
    weighted, _, counted = batch_loss(out, batch, TrainConfig(**base, stress_weight=2.0), scale, penalise=False)
    error = batch.virial.numpy()[:, VOIGT_ROWS, VOIGT_COLUMNS] / atoms / 20.0
    assert float(weighted - plain) == pytest.approx(2.0 * np.abs(error).mean(), rel=1e-5)
    assert counted.tolist() == [atoms, atoms]
    assert float(plain) == pytest.approx(1.0 / 20.0, rel=1e-6)


def test_coulomb_cache_gains_virials_without_being_recomputed(water, tmp_path):
    """A cache written without virials is extended in place (same file, same energies) when they are asked
    for; a broken virial array is named in a DataWarning and the cache recomputed."""
    frames = water.subset(np.arange(3))
    electrostatics = Electrostatics.for_system(frames.topology, frames.mean_cell())
    first = coulomb_cache(frames, tmp_path, electrostatics, progress=False)
    with np.load(first.path) as data:
        assert "virials" not in data
    extended = coulomb_cache(frames, tmp_path, electrostatics, progress=False, virials=True)
    assert extended.path == first.path and np.array_equal(extended.energies, first.energies)
    assert np.allclose(extended.virials[1], electrostatics.virial(frames.positions[1], frames.cells[1]), rtol=1e-12)
    plain = coulomb_cache(frames, tmp_path, electrostatics, progress=False)  # no virials asked: read as stored
    assert np.array_equal(plain.virials, extended.virials)
    np.savez(first.path, energies=first.energies, forces=first.forces, virials=np.zeros((2, 3, 3)))
    with pytest.warns(DataWarning, match=first.path.name):
        again = coulomb_cache(frames, tmp_path, electrostatics, progress=False, virials=True)
    assert np.allclose(again.virials, extended.virials, rtol=1e-12)


def test_reference_virial_cache_is_keyed_validated_and_recomputed_when_broken(water, tmp_path):
    """The stored virials are used while they fit the frames and their source; a broken file is named in a
    DataWarning and computed again; another source computes them again."""
    values = np.arange(len(water) * 9, dtype=np.float64).reshape(-1, 3, 3)
    calls = []

    def compute():
        calls.append(1)
        return values

    stored = reference_virial_cache(water, tmp_path, "source A", compute)
    assert stored.path == virial_cache_path(water, tmp_path) and len(calls) == 1
    assert np.array_equal(reference_virial_cache(water, tmp_path, "source A", compute).virials, values)
    assert len(calls) == 1
    reference_virial_cache(water, tmp_path, "source B", compute)
    assert len(calls) == 2
    stored.path.write_bytes(b"not a zip")
    with pytest.warns(DataWarning, match=stored.path.name):
        assert read_reference_virials(water, tmp_path) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert np.array_equal(reference_virial_cache(water, tmp_path, "source B", compute).virials, values)
    assert len(calls) == 3
    moved = water.subset(np.arange(len(water)))
    moved.positions = moved.positions + np.float32(0.01)
    assert virial_cache_path(moved, tmp_path) != stored.path


def _train_args(data, runs, name, *extra):
    args = ["train", "--data", str(data), "--model", "nequip", "--hyper", "channels=4", "--hyper", "layers=1"]
    return [*args, "--cutoff", "3.0", "--epochs", "2", "--runs-dir", str(runs), "--name", name, "--quiet",
            "--no-progress", *extra]  # fmt: skip


@pytest.mark.slow
def test_training_with_a_stress_term_through_the_cli(water_run, tmp_path):
    """With stress weight 0 no virial is computed (no column, no reference virials, no Coulomb virials);
    `--stress-weight 1` stores LAMMPS' virials in the dataset folder, extends the Coulomb cache, trains
    and logs a validation virial MAE that is `gnnmd evaluate --stress`'s on the val split, records the
    weight in config.json, and `--config` of that file carries it on."""
    data, runs = tmp_path / "water", tmp_path / "runs"
    shutil.copytree(water_run, data)
    assert main(_train_args(data, runs, "plain")) == 0
    rows = list(csv.DictReader(open(runs / "plain" / "metrics.csv")))
    assert not [key for key in rows[0] if "virial" in key]
    assert not list(data.glob("virials_*.npz"))
    (coulomb,) = data.glob("coulomb_*.npz")
    with np.load(coulomb) as stored:
        assert "virials" not in stored
        energies = stored["energies"]

    assert main(_train_args(data, runs, "stress", "--stress-weight", "1")) == 0
    assert json.loads((runs / "stress" / "config.json").read_text())["stress_weight"] == 1.0
    rows = list(csv.DictReader(open(runs / "stress" / "metrics.csv")))
    assert float(rows[-1]["val_virial_mae_per_atom"]) > 0 and float(rows[-1]["train_virial_mae_per_atom"]) > 0
    assert len(list(data.glob("virials_*.npz"))) == 1 and [coulomb] == list(data.glob("coulomb_*.npz"))
    with np.load(coulomb) as stored:
        assert stored["virials"].shape == (12, 3, 3) and np.array_equal(stored["energies"], energies)
    frames = load_frames(data)
    _, val = select_frames(frames, load_model(runs / "stress" / "best.pt")[1], "val")
    reference = read_reference_virials(frames, data).virials[val]
    expected = virial_errors(model_virials(runs / "stress" / "best.pt", frames, val), reference, frames, val)
    best = json.loads((runs / "stress" / "summary.json").read_text())["best_val_virial_mae_per_atom"]
    assert best == pytest.approx(expected["virial_mae_per_atom"], rel=1e-4)

    config = runs / "stress" / "config.json"
    assert main(["train", "--config", str(config), "--name", "again", "--epochs", "1", "--quiet", "--no-progress"]) == 0
    assert json.loads((runs / "again" / "config.json").read_text())["stress_weight"] == 1.0


@pytest.mark.slow
def test_finetuning_with_a_stress_term_on_some_of_the_frames(water_run, tmp_path):
    """`gnnmd finetune --stress-weight --max-frames`: the targets follow the frames the run keeps (the
    logged validation virial MAE is model_virials' against LAMMPS on exactly those frames)."""
    data, runs = tmp_path / "water", tmp_path / "runs"
    shutil.copytree(water_run, data)
    assert main(_train_args(data, runs, "parent", "--electrostatics", "none")) == 0
    args = ["finetune", "--from", str(runs / "parent" / "best.pt"), "--data", str(data), "--runs-dir", str(runs)]
    args += ["--name", "ft", "--max-frames", "7", "--epochs", "1", "--stress-weight", "1", "--quiet", "--no-progress"]
    assert main(args) == 0
    frames = load_frames(data)
    chosen, _, val = run_split(frames, 7, 0.1, 0)
    reference = read_reference_virials(frames, data).virials[chosen_frame_indices(len(frames), 7)][val]
    expected = virial_errors(model_virials(runs / "ft" / "best.pt", chosen, val), reference, chosen, val)
    rows = list(csv.DictReader(open(runs / "ft" / "metrics.csv")))
    assert float(rows[-1]["val_virial_mae_per_atom"]) == pytest.approx(expected["virial_mae_per_atom"], rel=1e-4)
    assert json.loads((runs / "ft" / "config.json").read_text())["stress_weight"] == 1.0


def test_stress_weight_is_refused_without_an_energy_or_a_force_field(water_run, tmp_path, capsys):
    """A direct-force family (no energy, no virial), a dataset with no force field to rerun (`gnnmd import`)
    and a negative weight are one-line errors, before anything runs."""
    args = ["--data", str(water_run), "--runs-dir", str(tmp_path / "runs"), "--stress-weight", "1", "--quiet"]
    assert main(["train", "--model", "eqforce", *args]) == 2
    assert "needs an energy model" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    segment = water_run / "segment_000"
    imported = tmp_path / "imported"
    dump, data_file = segment / "frames.lammpstrj", segment / "system.data"
    assert main(["import", "--data", str(data_file), "--dump", str(dump), "--out", str(imported)]) == 0
    capsys.readouterr()
    args[1] = str(imported)
    assert main(["train", "--model", "nequip", *args]) == 2
    err = capsys.readouterr().err
    assert "gnnmd train: error:" in err and "manifest.json" in err and "no reference force field" in err
    assert main(["train", "--model", "nequip", *args[:-3], "--stress-weight", "-1"]) == 2
    assert "--stress-weight must be a number >= 0" in capsys.readouterr().err


def test_training_reads_only_stored_reference_virials(water_run, tmp_path):
    """The train layer runs no LAMMPS: without stored virials a stress term is a ValueError naming the
    dataset and the file it looked for; resuming a run recorded before the option existed still works."""
    from gnnmd.train import train
    from gnnmd.train.setup import _check_resumable

    data = tmp_path / "water"
    shutil.copytree(water_run, data)
    config = TrainConfig(data=str(data), model="nequip", stress_weight=1.0, runs_dir=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="no reference virials of these frames"):
        train(config)
    plain = TrainConfig(data=str(data), model="nequip")
    saved = {k: v for k, v in json.loads(json.dumps(plain.__dict__)).items() if k != "stress_weight"}
    saved["data"] = str(data.resolve())
    _check_resumable(plain, tmp_path / "old.pt", {"config": saved, "training": {}})
