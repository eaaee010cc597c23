"""The NequIP-style energy model on real LAMMPS frames: E(3) equivariance and permutation equivariance,
forces = -dE/dr (finite differences, float64), a smooth cutoff, periodic-image consistency, and the
per-type scale/shift fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from e3nn import o3

from gnnmd.data import FrameDataset, build_graph, load_frames, make_loader
from gnnmd.data.frames import make_whole, replicate
from gnnmd.models.nequip import NequIP, polynomial_envelope

CUTOFF = 4.0


@pytest.fixture(scope="module")
def water(water_run):
    return load_frames(water_run)


def make_model(frames, l_max=1, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = NequIP(channels=8, l_max=l_max, layers=2, cutoff=CUTOFF, n_basis=6, radial_hidden=16)
    model.fit_scale_shift(frames)
    return model.to(dtype).eval()


def forces_of(model, topology, positions, cell):
    """Forces (float64 numpy) of one frame; a float64 model sees the float64 positions."""
    graph = build_graph(topology, np.asarray(positions), np.asarray(cell), CUTOFF)
    graph.pos = torch.as_tensor(np.asarray(positions), dtype=model.type_scale.dtype)
    graph.cell = torch.as_tensor(np.asarray(cell), dtype=model.type_scale.dtype).reshape(1, 3, 3)
    with torch.no_grad():
        return model(graph)["forces"].double().numpy()


@pytest.mark.parametrize("l_max", [1, 2])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_rotation_translation_equivariance(water, l_max, dtype, tolerance):
    model = make_model(water, l_max, dtype)
    topology = water.topology
    positions = water.positions[0].astype(np.float64)
    cell = water.cells[0].astype(np.float64)
    forces = forces_of(model, topology, positions, cell)
    assert np.abs(forces).mean() > 0.05  # not trivially zero, so the comparisons below mean something

    torch.manual_seed(1)
    rotation = o3.rand_matrix(dtype=torch.float64).numpy()
    rotated = forces_of(model, topology, positions @ rotation.T, cell @ rotation.T)
    assert np.abs(rotated - forces @ rotation.T).max() < tolerance

    translated = forces_of(model, topology, positions + np.array([3.3, -7.1, 12.9]), cell)
    assert np.abs(translated - forces).max() < tolerance


def test_permutation_equivariance(water):
    model = make_model(water)
    graph = build_graph(water.topology, water.positions[1], water.cells[1], CUTOFF)
    rng = np.random.default_rng(3)
    n, n_edges = graph.num_nodes, graph.edge_index.shape[1]
    perm = torch.from_numpy(rng.permutation(n))  # new atom k is old atom perm[k]
    inverse = torch.argsort(perm)
    edge_perm = torch.from_numpy(rng.permutation(n_edges))
    permuted = graph.clone()
    for name in ("x", "pos", "atom_type"):
        permuted[name] = graph[name][perm]
    permuted.edge_index = inverse[graph.edge_index][:, edge_perm]
    for name in ("edge_attr", "edge_vec", "edge_shift"):
        permuted[name] = graph[name][edge_perm]
    with torch.no_grad():
        forces = model(graph)["forces"]
        out = model(permuted)
    assert torch.abs(out["forces"] - forces[perm]).max() < 1e-4
    assert torch.allclose(out["energy"], model(graph)["energy"], rtol=1e-5)


def test_forces_are_minus_energy_gradient_float64(water):
    model = make_model(water, l_max=2, dtype=torch.float64)
    graph = build_graph(water.topology, water.positions[2], water.cells[2], CUTOFF)
    graph.pos = graph.pos.double()
    with torch.no_grad():
        forces = model(graph)["forces"]
    step = 1e-5
    rng = np.random.default_rng(0)
    errors = []
    for atom in rng.choice(graph.num_nodes, 4, replace=False):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = graph.clone()
                moved.pos = graph.pos.clone()
                moved.pos[atom, axis] += sign * step
                with torch.no_grad():
                    energies.append(float(model(moved)["energy"]))
            numeric = -(energies[0] - energies[1]) / (2 * step)
            errors.append(abs(numeric - float(forces[atom, axis])))
    assert max(errors) / float(forces.abs().max()) < 1e-6


def test_energy_continuous_across_cutoff(argon_run):
    """Two argon atoms pulled apart through the cutoff, the graph rebuilt each time: no jump in E."""
    topology = load_frames(argon_run).topology
    pair = {f.name: getattr(topology, f.name) for f in dataclasses.fields(topology)}
    for name in ("types", "charges", "epsilon", "sigma", "molecules"):
        pair[name] = pair[name][:2]
    pair["bonds"] = np.zeros((0, 2), dtype=np.int64)
    pair["angles"] = np.zeros((0, 3), dtype=np.int64)
    pair = type(topology)(**pair)
    torch.manual_seed(0)
    model = NequIP(channels=8, l_max=1, layers=2, cutoff=CUTOFF, n_basis=6, radial_hidden=16).double().eval()
    cell = np.eye(3) * 20.0

    def energy_and_force(r):
        graph = build_graph(pair, np.array([[5.0, 5.0, 5.0], [5.0 + r, 5.0, 5.0]]), cell, CUTOFF)
        out = model(graph)
        return float(out["energy"].detach()), float(out["forces"][1, 0].detach()), graph.edge_index.shape[1]

    e_in, f_in, edges_in = energy_and_force(CUTOFF - 1e-4)
    e_out, f_out, edges_out = energy_and_force(CUTOFF + 1e-4)
    e_near, _, _ = energy_and_force(CUTOFF - 1.0)
    assert (edges_in, edges_out) == (2, 0)  # the pair really crosses the neighbour list's cutoff
    assert abs(e_near - e_out) > 1e-4  # the pair does interact inside
    assert abs(e_in - e_out) < 1e-10 * max(1.0, abs(e_near - e_out))
    assert abs(f_in) < 1e-8 and f_out == 0.0
    r = torch.linspace(0.0, 2 * CUTOFF, 101, dtype=torch.float64)
    assert torch.all(polynomial_envelope(r, CUTOFF)[r >= CUTOFF] == 0)


def test_supercell_gives_same_forces(water):
    model = make_model(water)
    positions = water.positions[3].astype(np.float64)
    cell = water.cells[3].astype(np.float64)
    forces = forces_of(model, water.topology, positions, cell)
    big_topology, big_positions, big_cell = replicate(water.topology, positions, cell, (2, 2, 2))
    big_forces = forces_of(model, big_topology, big_positions, big_cell).reshape(8, -1, 3)
    assert np.abs(big_forces - forces[None]).max() < 1e-4


def test_scale_shift_fit(water):
    model = NequIP(channels=4, l_max=1, layers=1, cutoff=CUTOFF)
    fitted = model.fit_scale_shift(water)
    keys = np.array(fitted["type_keys"])
    features = water.topology.node_features.astype(np.float64)
    for key, scale in zip(keys, fitted["type_scale"]):
        atoms = np.all(np.abs(features - key) < 1e-6, axis=1)
        assert scale == pytest.approx(np.sqrt(np.mean(water.forces[:, atoms].astype(np.float64) ** 2)), rel=1e-6)
    counts = np.array([np.all(np.abs(features - key) < 1e-6, axis=1).sum() for key in keys])
    # one composition: the least-squares shifts reproduce the mean energy
    assert counts @ np.array(fitted["type_shift"]) == pytest.approx(water.energies.mean(), abs=1e-6)
    assert 5 < fitted["avg_num_neighbors"] < 40


def test_repulsive_wall_below_the_training_distances(water):
    """The wall sits at 0.9x the shortest distance of each (type, type, bond class) in the training frames:
    it leaves every training frame's energy and forces exactly unchanged, and pushes apart an O-H bond
    squeezed to 0.5 A, where the bare network (never trained there) need not."""
    walled = make_model(water, dtype=torch.float64)
    bare = NequIP(**{**walled.hyper, "core_strength": 0.0}).double().eval()
    bare.load_state_dict(walled.state_dict())
    topology = water.topology
    o, h = sorted(int(a) for a in topology.bonds[0])  # an O-H bond (O first in the data file)
    assert topology.charges[o] < 0 < topology.charges[h]
    rows = walled.type_rows(torch.as_tensor(topology.node_features, dtype=torch.float64))[0]
    bond_lengths = [
        np.linalg.norm(water.positions[k][a] - water.positions[k][b]) for k in range(len(water)) for a, b in topology.bonds
    ]  # fmt: skip
    radius = float(walled.core_radius[rows[o], rows[h], 1])  # class 1: bonded
    assert radius == float(walled.core_radius[rows[h], rows[o], 1]) == pytest.approx(0.9 * min(bond_lengths), rel=1e-5)
    for k in range(len(water)):
        positions, cell = water.positions[k].astype(np.float64), water.cells[k].astype(np.float64)
        assert np.array_equal(forces_of(walled, topology, positions, cell), forces_of(bare, topology, positions, cell))

    squeezed = water.positions[0].astype(np.float64).copy()
    bond = squeezed[h] - squeezed[o]
    squeezed[h] = squeezed[o] + 0.5 * bond / np.linalg.norm(bond)
    cell = water.cells[0].astype(np.float64)
    push = forces_of(walled, topology, squeezed, cell) - forces_of(bare, topology, squeezed, cell)
    unit = bond / np.linalg.norm(bond)
    expected = 3 * walled.core_strength * (radius - 0.5) ** 2  # -dE/dr of k (r_c - r)^3, on the H along the bond
    # the O feels only this bond's wall (the squeezed H also nears its H neighbour, whose 1-3 wall acts on the Hs)
    assert push[o] @ unit == pytest.approx(-expected, rel=1e-9) and push[h] @ unit > 0.9 * expected
    molecule = np.flatnonzero(topology.molecules == topology.molecules[o])
    assert np.abs(np.delete(push, molecule, axis=0)).max() == 0.0 and np.abs(push.sum(axis=0)).max() < 1e-9


def test_stretch_wall_beyond_the_longest_bond(water):
    """Pairs of one molecule get a second wall beyond the longest distance / 0.9 seen in training: an O-H
    bond pulled to 2 A is pulled back with -dE/dr of k (r - r_s)^3, which the bare network need not do.
    Pairs of different molecules get none (they may part freely)."""
    walled = make_model(water, dtype=torch.float64)
    bare = NequIP(**{**walled.hyper, "core_strength": 0.0}).double().eval()
    bare.load_state_dict(walled.state_dict())
    topology = water.topology
    o, h = sorted(int(a) for a in topology.bonds[0])
    rows = walled.type_rows(torch.as_tensor(topology.node_features, dtype=torch.float64))[0]
    whole = [make_whole(topology, water.positions[k], water.cells[k]) for k in range(len(water))]  # unwrapped molecules
    bond_lengths = [np.linalg.norm(x[a] - x[b]) for x in whole for a, b in topology.bonds]
    stretch = float(walled.stretch_radius[rows[o], rows[h], 1])
    assert stretch == pytest.approx(max(bond_lengths) / 0.9, rel=1e-5)
    assert float(walled.stretch_radius[rows[o], rows[o], 0]) == 0.0 == float(walled.stretch_radius[rows[o], rows[h], 0])

    pulled = water.positions[0].astype(np.float64).copy()
    bond = pulled[h] - pulled[o]
    unit = bond / np.linalg.norm(bond)
    pulled[h] = pulled[o] + 2.0 * unit
    cell = water.cells[0].astype(np.float64)
    pull = forces_of(walled, topology, pulled, cell) - forces_of(bare, topology, pulled, cell)
    expected = 3 * walled.core_strength * (2.0 - stretch) ** 2
    assert pull[o] @ unit == pytest.approx(expected, rel=1e-9) and pull[h] @ unit < -0.9 * expected
    assert np.abs(pull.sum(axis=0)).max() < 1e-9


@pytest.mark.slow
def test_walls_refit_onto_a_trained_model(water, water_run, tmp_path, capsys):
    """`gnnmd walls` gives a checkpoint of the same network with the walls training would have fitted
    (here: a model saved with its walls removed, as from before they existed), and never overwrites."""
    from gnnmd.cli import main
    from gnnmd.models.checkpoint import load_model, save_checkpoint

    walled = make_model(water)
    state = {k: v for k, v in walled.state_dict().items() if not k.endswith("_radius")}
    old = NequIP(**walled.hyper)
    old.load_state_dict(state)  # checkpoints from before the walls load with none
    assert float(old.core_radius.abs().max()) == 0.0 == float(old.stretch_radius.abs().max())
    type_table = [
        {"type_id": i + 1, "name": n, "mass": 1.0, "charge": 0.0, "epsilon": 0.0, "sigma": 0.0}
        for i, n in enumerate("OH")
    ]
    source = save_checkpoint(tmp_path / "old.pt", old, type_table=type_table, normalisation={})
    assert main(["walls", "--model", str(source), "--data", str(water_run), "--out", str(tmp_path / "new.pt")]) == 0
    new, info = load_model(tmp_path / "new.pt")
    assert torch.equal(new.core_radius, walled.core_radius) and torch.equal(new.stretch_radius, walled.stretch_radius)
    for name, value in walled.state_dict().items():
        assert torch.equal(new.state_dict()[name], value), name
    assert info.normalisation["walls"]["margin"] == 0.9

    stronger = tmp_path / "stronger.pt"
    assert (
        main(
            [
                "walls",
                "--model",
                str(source),
                "--data",
                str(water_run),
                "--out",
                str(stronger),
                "--strength",
                "5e4",
                "--margin",
                "0.95",
            ]
        )
        == 0
    )
    model, info = load_model(stronger)
    assert model.core_strength == 5e4 == info.hyper["core_strength"] and model.core_margin == 0.95
    assert torch.allclose(model.core_radius, walled.core_radius / 0.9 * 0.95)

    capsys.readouterr()
    assert main(["walls", "--model", str(source), "--data", str(water_run), "--out", str(stronger)]) == 2
    assert "exists" in capsys.readouterr().err


def test_training_step_and_checkpoint_roundtrip(water):
    """Forces carry a graph for a force loss; state_dict + hyper rebuild an identical model."""
    model = make_model(water).train()
    batch = next(iter(make_loader(FrameDataset(water, CUTOFF), batch_size=2)))
    out = model(batch)
    assert out["energy"].shape == (2,) and out["forces"].shape == batch.y.shape
    loss = (out["forces"] - batch.y).abs().mean()
    loss.backward()
    grads = [p.grad for p in model.interactions.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)

    rebuilt = NequIP(**model.hyper)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(batch)["forces"], model.eval()(batch)["forces"], atol=1e-6)


def test_batched_graphs_match_single_graphs(water):
    """Each graph of a batch uses its own cell (NPT frames differ) and atoms."""
    model = make_model(water)
    dataset = FrameDataset(water, CUTOFF, indices=[0, 7, 11])
    with torch.no_grad():
        batched = model(next(iter(make_loader(dataset, batch_size=3))))
        singles = [model(dataset[k]) for k in range(3)]
    assert not np.allclose(water.cells[0], water.cells[11])
    assert torch.allclose(batched["forces"], torch.cat([s["forces"] for s in singles]), atol=1e-5)
    assert torch.allclose(batched["energy"], torch.cat([s["energy"] for s in singles]), rtol=1e-6)


@pytest.mark.slow
def test_learns_water_forces_minus_coulomb(water):
    """A few epochs on 10 frames cut the validation error of reference-minus-Coulomb forces by half."""
    from gnnmd.data import coulomb_cache
    from gnnmd.models.electrostatics import Electrostatics

    cache = coulomb_cache(water, None, Electrostatics.for_system(water.topology, water.mean_cell()), progress=False)
    torch.manual_seed(0)
    model = NequIP(channels=16, l_max=1, layers=2, cutoff=CUTOFF)
    model.fit_scale_shift(water, coulomb=cache, indices=np.arange(10))
    train = make_loader(FrameDataset(water, CUTOFF, indices=np.arange(10)), batch_size=2, shuffle=True)
    val = make_loader(FrameDataset(water, CUTOFF, indices=[10, 11]), batch_size=2)

    def val_error():
        model.eval()
        batch = next(iter(val))
        with torch.no_grad():
            return float((model(batch)["forces"] - (batch.y - cache.for_batch(batch)[0])).abs().mean())

    before = val_error()
    optimizer = torch.optim.Adam(model.parameters(), 5e-3)
    for _ in range(8):
        model.train()
        for batch in train:
            loss = (model(batch)["forces"] - (batch.y - cache.for_batch(batch)[0])).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert val_error() < 0.5 * before


@pytest.mark.slow
def test_finetune_with_a_longer_cutoff(water_run, argon_run, tmp_path):
    """Argon's LJ tail reaches past the water model's cutoff: a model fine-tunes on longer graphs with the
    parent's weights, its radial basis stretched to the new cutoff and its neighbour count refitted."""
    from gnnmd.cli import main
    from gnnmd.models.checkpoint import load_model

    common = ["--runs-dir", str(tmp_path), "--epochs", "1", "--batch-size", "2", "--no-progress", "--threads", "1"]
    assert main(["train", "--model", "nequip", "--hyper", "channels=4", "--hyper", "layers=1", "--cutoff", "4.0",
                 "--data", str(water_run), "--name", "parent", "--electrostatics", "none", *common]) == 0  # fmt: skip
    parent, _ = load_model(tmp_path / "parent" / "best.pt")
    stretched = parent.with_cutoff(6.0)
    assert stretched.cutoff == 6.0 and stretched.hyper["cutoff"] == 6.0 and float(stretched.avg_num_neighbors) == 0
    shared = parent.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in stretched.state_dict().items() if k != "avg_num_neighbors")

    assert main(["finetune", "--from", str(tmp_path / "parent" / "best.pt"), "--data", str(argon_run),
                 "--cutoff", "6.0", "--name", "argon", *common]) == 0  # fmt: skip
    child, info = load_model(tmp_path / "argon" / "best.pt")
    assert info.cutoff == 6.0 and info.hyper["cutoff"] == 6.0 and child.cutoff == 6.0
    argon = load_frames(argon_run)
    graph = build_graph(argon.topology, argon.positions[0], argon.cells[0], 6.0)
    # the neighbour count was refitted on argon at 6 A (about 17 neighbours), not kept from water at 4 A
    assert float(child.avg_num_neighbors) == pytest.approx(graph.num_edges / graph.num_nodes, rel=0.2)

    assert main(["train", "--model", "eqforce", "--hyper", "hidden=8", "--cutoff", "4.0", "--data", str(water_run),
                 "--name", "eq", *common]) == 0  # fmt: skip
    assert main(["finetune", "--from", str(tmp_path / "eq" / "best.pt"), "--data", str(argon_run), "--cutoff", "6.0",
                 "--name", "eq-argon", *common]) == 0  # fmt: skip
    eq_child, eq_info = load_model(tmp_path / "eq-argon" / "best.pt")
    assert eq_info.cutoff == 6.0 and float(eq_child.basis.centers.max()) == pytest.approx(6.0)
