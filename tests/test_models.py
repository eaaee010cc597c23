"""Model families on real LAMMPS frames: symmetry of eqforce, shape and determinism of mpnn,
checkpoint round trips and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnmd.data import load_frames
from gnnmd.data.graphs import DISTANCE, UNIT_VECTOR, GraphBuilder
from gnnmd.models import build_model
from gnnmd.models.checkpoint import load_model, save_checkpoint
from gnnmd.train.augment import random_rotations, rotate_batch

CUTOFF = 3.4


@pytest.fixture(scope="module")
def water(water_run):
    return load_frames(water_run)


def _graph(frames, k=0, positions=None, cell=None):
    builder = GraphBuilder(frames.topology, CUTOFF)
    pos = frames.positions[k] if positions is None else positions
    return builder(pos, frames.cells[k] if cell is None else cell, frames.forces[k])


def _eqforce():
    torch.manual_seed(0)
    return build_model("eqforce", cutoff=CUTOFF, hidden=32, layers=2).eval()


def test_eqforce_rotates_with_a_random_rotation_of_the_rebuilt_graph(water):
    model = _eqforce()
    graph = _graph(water)
    rotation = random_rotations(1, torch.Generator().manual_seed(3))[0].double().numpy()
    pos = water.positions[0].astype(np.float64) @ rotation.T
    cell = water.cells[0].astype(np.float64) @ rotation.T
    rotated = _graph(water, positions=pos, cell=cell)  # new neighbour list from rotated coordinates
    assert rotated.edge_index.shape == graph.edge_index.shape
    with torch.no_grad():
        forces = model(graph)["forces"].double().numpy()
        forces_rot = model(rotated)["forces"].double().numpy()
    assert np.abs(forces).max() > 0.1
    assert np.abs(forces_rot - forces @ rotation.T).max() < 1e-4


def test_eqforce_invariant_to_translation_and_permutation(water):
    model = _eqforce()
    graph = _graph(water, k=1)
    with torch.no_grad():
        forces = model(graph)["forces"]
        shifted = _graph(water, k=1, positions=water.positions[1] + np.array([3.7, -11.2, 25.0], dtype=np.float32))
        assert (model(shifted)["forces"] - forces).abs().max() < 1e-4

        perm = torch.from_numpy(np.random.default_rng(0).permutation(graph.num_nodes))
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(len(perm))
        edges = torch.from_numpy(np.random.default_rng(1).permutation(graph.edge_index.shape[1]))
        permuted = graph.clone()
        for key in ("x", "pos", "y", "atom_type"):
            permuted[key] = graph[key][perm]
        permuted.edge_index = inverse[graph.edge_index[:, edges]]
        for key in ("edge_attr", "edge_vec", "edge_shift"):
            permuted[key] = graph[key][edges]
        assert (model(permuted)["forces"] - forces[perm]).abs().max() < 1e-4
        # symmetric pair strengths: the frame's forces sum to zero (Newton's third law)
        assert forces.sum(0).abs().max() < 1e-3 * forces.abs().sum()


def test_mpnn_shape_determinism_and_not_equivariant(water):
    graph = _graph(water)
    torch.manual_seed(5)
    a = build_model("mpnn", hidden=16, cutoff=CUTOFF)
    torch.manual_seed(5)
    b = build_model("mpnn", hidden=16, cutoff=CUTOFF)
    a.eval(), b.eval()
    with torch.no_grad():
        fa, fb = a(graph)["forces"], b(graph)["forces"]
        assert fa.shape == (water.topology.n_atoms, 3) and fa.dtype == torch.float32
        assert torch.equal(fa, fb) and torch.equal(fa, a(graph)["forces"])
        # dropout is on in training mode, and seeded
        a.train()
        torch.manual_seed(1)
        t1 = a(graph)["forces"]
        torch.manual_seed(1)
        assert torch.equal(t1, a(graph)["forces"]) and not torch.equal(t1, fa)
        a.eval()
        # it reads directions as numbers: a rotation does not just rotate its output (hence augmentation)
        rotation = random_rotations(1, torch.Generator().manual_seed(3))
        rotated = rotate_batch(graph.clone(), rotation)
        assert (a(rotated)["forces"] - fa @ rotation[0].T).abs().max() > 1e-3


def test_rotate_batch_is_consistent_with_a_rebuilt_graph(water):
    graph = _graph(water)
    rotation = random_rotations(1, torch.Generator().manual_seed(9))
    turned = rotate_batch(graph.clone(), rotation)
    r = rotation[0].numpy()
    assert np.allclose(turned.pos.numpy(), water.positions[0] @ r.T, atol=1e-4)
    assert np.allclose(turned.cell[0].numpy(), water.cells[0] @ r.T, atol=1e-4)
    vec = turned.edge_vec.numpy()
    units = turned.edge_attr[:, UNIT_VECTOR].numpy()
    assert np.allclose(units, vec / np.linalg.norm(vec, axis=1, keepdims=True), atol=1e-5)
    assert torch.equal(turned.edge_attr[:, : DISTANCE + 1], graph.edge_attr[:, : DISTANCE + 1])


@pytest.mark.parametrize("family", ["mpnn", "eqforce"])
def test_checkpoint_round_trip_gives_identical_predictions(water, tmp_path, family):
    torch.manual_seed(2)
    model = build_model(family, hidden=16, cutoff=CUTOFF).eval()
    model.set_normalisation({"force_scale": 17.5})
    table = water.topology.type_table()
    path = save_checkpoint(tmp_path / "m.pt", model, type_table=table, normalisation={"force_scale": 17.5})
    loaded, info = load_model(path)
    graph = _graph(water, k=2)
    with torch.no_grad():
        assert torch.equal(model(graph)["forces"], loaded(graph)["forces"])
    assert info.family == family and info.cutoff == CUTOFF and info.type_table == table
    assert info.hyper == model.hyper and info.gnnmd_version
    assert float(loaded.force_scale) == 17.5
    assert not list(tmp_path.glob("*.tmp"))  # written via a temp file, renamed
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode == plain.stat().st_mode  # permissions of any file the user writes


def test_checkpoint_errors_name_the_file(water, tmp_path):
    model = build_model("eqforce", hidden=8, cutoff=CUTOFF)
    path = save_checkpoint(tmp_path / "eq.pt", model, type_table=[], normalisation={"force_scale": 1.0})
    with pytest.raises(ValueError, match=r"eq\.pt.*'eqforce'.*'mpnn'"):
        load_model(path, family="mpnn")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt.pt"):
        load_model(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="other.pt: not a gnnmd checkpoint"):
        load_model(other)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown model family"):
        build_model("transformer")
    with pytest.raises(ValueError, match="no part named"):
        model.parameters_of("nonsense")
