"""The fast inference path of the energy model (behaviour, not timings): the tabulated NequIP
(`gnnmd.inference.tabulated_nequip`: radial MLPs as splines, a half neighbour list, chunked edge sums with a hand-written
backward, dense node maps) gives the network's energy and forces; the Verlet neighbour list of
`ModelForces` gives the forces of a graph built afresh at every call; and neither changes the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gnnmd.data import GraphBuilder, build_graph, load_frames, replicate
from gnnmd.data.graphs import VerletList
from gnnmd.inference import ModelForces
from gnnmd.inference.tabulated_nequip import TabulatedNequIP
from gnnmd.models.checkpoint import load_model, save_checkpoint
from gnnmd.models.electrostatics import Electrostatics
from gnnmd.models.nequip import NequIP

CUTOFF = 4.0
SHIPPED = Path(__file__).resolve().parent.parent / "benchmarks" / "models" / "nequip-none-water" / "best.pt"


@pytest.fixture(scope="module")
def water(water_run):
    return load_frames(water_run)


def fitted_model(frames, l_max=1, seed=0, layers=2) -> NequIP:
    torch.manual_seed(seed)
    model = NequIP(channels=8, l_max=l_max, layers=layers, cutoff=CUTOFF, n_basis=6, radial_hidden=16)
    model.fit_scale_shift(frames)
    return model.eval()


def network(model, topology, positions, cell) -> tuple[float, np.ndarray]:
    """Energy and forces of the model itself on a graph built for these positions (in its dtype)."""
    dtype = model.type_scale.dtype
    graph = build_graph(topology, positions, cell, model.cutoff)
    graph.pos = torch.as_tensor(positions, dtype=dtype)
    graph.cell = torch.as_tensor(cell, dtype=dtype).reshape(1, 3, 3)
    graph.edge_shift = graph.edge_shift.to(dtype)
    out = model(graph)
    return float(out["energy"].sum()), out["forces"].detach().double().numpy()


def tabulated(engine, topology, positions, cell, skin=0.0, verlet=None) -> tuple[float, np.ndarray]:
    """Energy and forces of the tabulated model (walls included), as ModelForces computes them."""
    dtype = engine.model.type_scale.dtype
    verlet = verlet or VerletList(GraphBuilder(topology, engine.cutoff), skin)
    verlet.update(positions, cell)
    atoms = engine.atoms(torch.from_numpy(topology.node_features))
    pos = torch.as_tensor(positions, dtype=dtype).requires_grad_(True)
    near = verlet.within(pos, engine.cutoff)
    i, j, c, s = (t.index_select(0, near) for t in (verlet.i, verlet.j, verlet.pair_class, verlet.shift_vectors))
    vectors = pos.index_select(0, j) - pos.index_select(0, i) + s.to(dtype)
    energy = engine.energy(atoms, pos, engine.pairs(i, j, c, s.to(dtype)))
    radii = engine.wall_radii(atoms, i, j, c)
    if radii is not None:
        energy = energy + engine.wall_energy(torch.linalg.vector_norm(vectors, dim=1), *radii)
    (grad,) = torch.autograd.grad(energy, pos)
    return float(energy.detach()), -grad.double().numpy()


def squeezed(frames, k=0, distance=0.55):
    """Frame k with its first O-H bond squeezed to `distance` (inside the repulsive wall)."""
    positions = frames.positions[k].astype(np.float64).copy()
    o, h = sorted(int(a) for a in frames.topology.bonds[0])
    bond = positions[h] - positions[o]
    positions[h] = positions[o] + distance * bond / np.linalg.norm(bond)
    return positions


@pytest.mark.parametrize(
    "l_max, cutoff, layers", [(1, CUTOFF, 2), (2, CUTOFF, 2), (1, 5.5, 2), (2, CUTOFF, 3), (1, CUTOFF, 1)]
)
def test_tabulated_model_gives_the_networks_energy_and_forces(water, l_max, cutoff, layers):
    """float64, fine table: the spline's error (falls as step^3) is far below anything physical; the walls
    act (a squeezed bond); with a 5.5 A cutoff the 9.5 A cell holds two images of some pairs."""
    model = fitted_model(water, l_max, layers=layers).with_cutoff(cutoff).double().eval()
    model.fit_scale_shift(water)
    engine = TabulatedNequIP(model, intervals=4096)
    for positions in (water.positions[1].astype(np.float64), squeezed(water)):
        cell = water.cells[1].astype(np.float64)
        energy, forces = network(model, water.topology, positions, cell)
        e, f = tabulated(engine, water.topology, positions, cell, skin=1.0)
        scale = np.abs(forces).max()
        assert scale > 0.05
        assert np.abs(f - forces).max() < 1e-6 * scale and abs(e - energy) < 1e-7 * abs(energy)


def test_interpolation_error_of_the_default_table(water):
    """The shipped water model with the default table: forces within 1e-4 kcal/mol/A of the network's
    (float64, so the interpolation error alone), far below its force error (~0.7 kcal/mol/A)."""
    model, _ = load_model(SHIPPED)
    model = model.double()
    positions, cell = water.positions[2].astype(np.float64), water.cells[2].astype(np.float64)
    energy, forces = network(model, water.topology, positions, cell)
    e, f = tabulated(TabulatedNequIP(model), water.topology, positions, cell)
    assert np.abs(forces).mean() > 5.0 and np.abs(f - forces).max() < 1e-4 and abs(e - energy) < 1e-4


def test_chunks_and_list_order_change_nothing(water):
    """Edge sums chunk by chunk (here 7 pairs a chunk) give the one-chunk result."""
    model = fitted_model(water).double()
    positions, cell = water.positions[3].astype(np.float64), water.cells[3].astype(np.float64)
    e1, f1 = tabulated(TabulatedNequIP(model, chunk=1 << 20), water.topology, positions, cell)
    e2, f2 = tabulated(TabulatedNequIP(model, chunk=7), water.topology, positions, cell)
    assert abs(e1 - e2) < 1e-9 * abs(e1) and np.abs(f1 - f2).max() < 1e-9 * np.abs(f1).max()


def test_tabulated_leaves_the_model_and_training_alone(water):
    """TabulatedNequIP reads the model: parameters, buffers, mode and predictions are as before, and a
    training step still works on the model."""
    model = fitted_model(water).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = TabulatedNequIP(model)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "layers") and "tabulated" not in str(list(model.state_dict()))
    graph = build_graph(water.topology, water.positions[0], water.cells[0], CUTOFF)
    graph.y = torch.as_tensor(water.forces[0])
    loss = (model(graph)["forces"] - graph.y).abs().mean()
    loss.backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in model.interactions.parameters() if p.grad is not None)
    assert engine.model is model


def test_verlet_list_keeps_every_pair_within_the_cutoff(water):
    """After moves under skin/2 the list (not rebuilt) still holds every pair a fresh list within the
    cutoff holds; a larger move or a new cell rebuilds it."""
    topology, cell = water.topology, water.cells[0].astype(np.float64)
    builder = GraphBuilder(topology, CUTOFF)
    verlet = VerletList(builder, skin=1.0)
    positions = water.positions[0].astype(np.float64)
    assert verlet.update(positions, cell) and verlet.rebuilds == 1
    rng = np.random.default_rng(0)
    moved = positions + rng.uniform(-0.28, 0.28, positions.shape)  # |move| < 0.49 < skin / 2
    assert not verlet.update(moved, cell)
    fresh = VerletList(builder, skin=0.0)
    fresh.update(moved, cell)

    def keys(v):
        pos = torch.from_numpy(moved)
        near = v.within(pos, CUTOFF).numpy()
        shifts = np.rint(v.shift_vectors.double().numpy() @ np.linalg.inv(cell)).astype(np.int64)[near]
        classes = v.pair_class.numpy()[near]
        return {(a, b, *s, c) for a, b, s, c in zip(v.i.numpy()[near], v.j.numpy()[near], shifts, classes)}

    assert keys(verlet) == keys(fresh) and len(keys(fresh)) > 0
    far = moved.copy()
    far[5] += 0.6
    assert verlet.update(far, cell) and verlet.rebuilds == 2
    assert verlet.update(far, cell * 1.01) and verlet.rebuilds == 3
    with pytest.raises(ValueError, match="skin"):
        VerletList(builder, skin=-1.0)


@pytest.mark.slow
def test_skin_gives_the_forces_of_a_graph_built_at_every_call(water, tmp_path):
    """ModelForces with a skin along a jittered trajectory (rebuilding now and then) gives what rebuilding
    at every call gives, to float32 noise, energies included; and the model itself (tabulate=False)
    agrees to float32 noise too, walls and squeezed bond included."""
    model = fitted_model(water)
    path = save_checkpoint(tmp_path / "m.pt", model, type_table=water.topology.type_table(), normalisation={})
    with_skin = ModelForces(path, water.topology)  # skin 1 A: the 9.5 A cell holds two images of some pairs
    every_call = ModelForces(path, water.topology, skin=0.0)
    exact = ModelForces(path, water.topology, tabulate=False)
    rng = np.random.default_rng(1)
    positions, cell = squeezed(water, 4), water.cells[4].astype(np.float64)
    for _ in range(12):
        positions = positions + rng.normal(scale=0.04, size=positions.shape)
        f_skin, e_skin = with_skin(positions, cell)
        f_every, e_every = every_call(positions, cell)
        f_exact, e_exact = exact(positions, cell)
        scale = max(np.abs(f_exact).max(), float(model.force_scale))
        assert np.abs(f_skin - f_every).max() < 1e-4 * scale and abs(e_skin - e_every) < 1e-5 * abs(e_every)
        assert np.abs(f_skin - f_exact).max() < 1e-4 * scale and abs(e_skin - e_exact) < 1e-5 * abs(e_exact)
    assert 1 < with_skin.verlet.rebuilds < 12 and every_call.verlet.rebuilds == 12


def test_supercell_and_coulomb_through_the_fast_path(water, tmp_path):
    """A 2x2x2 supercell through the Verlet list gives every copy the frame's forces, and a model with
    PME gets the same Coulomb forces added as on the exact path."""
    model = fitted_model(water)
    settings = Electrostatics.for_system(water.topology, water.mean_cell()).config()
    table = water.topology.type_table()
    path = save_checkpoint(tmp_path / "pme.pt", model, type_table=table, normalisation={}, electrostatics=settings)
    positions, cell = water.positions[5].astype(np.float64), water.cells[5].astype(np.float64)
    fast, exact = ModelForces(path, water.topology), ModelForces(path, water.topology, tabulate=False)
    (f_fast, e_fast), (f_exact, e_exact) = fast(positions, cell), exact(positions, cell)
    scale = np.abs(f_exact).max()
    assert np.abs(f_fast - f_exact).max() < 1e-4 * scale and abs(e_fast - e_exact) < 1e-5 * abs(e_exact)
    big_topology, big_positions, big_cell = replicate(water.topology, positions, cell, (2, 2, 2))
    big = ModelForces(path, big_topology, electrostatics=False)
    small = ModelForces(path, water.topology, electrostatics=False)
    f_big, e_big = big(big_positions, big_cell)
    f_small, e_small = small(positions, cell)
    assert np.abs(f_big.reshape(8, -1, 3) - f_small[None]).max() < 1e-4 * np.abs(f_small).max()
    assert abs(e_big - 8 * e_small) < 1e-5 * abs(e_big)


def test_repulsion_prior_is_in_both_paths_and_is_the_mixed_lj_wall(water):
    """The repulsion prior (hyper `repulsion`): the same energy in the network and its tabulated form, and
    exactly strength * 4 eps_ij (sigma_ij/r)^12 * envelope summed over pairs of different molecules."""
    from gnnmd.models.nequip import polynomial_envelope

    torch.manual_seed(0)
    plain = NequIP(channels=8, l_max=1, layers=2, cutoff=CUTOFF, n_basis=6, radial_hidden=16).double()
    torch.manual_seed(0)
    prior = NequIP(channels=8, l_max=1, layers=2, cutoff=CUTOFF, n_basis=6, radial_hidden=16, repulsion=2.0).double()
    for model in (plain, prior):
        model.fit_scale_shift(water)
        model.eval()
    positions, cell = water.positions[1].astype(np.float64), water.cells[1].astype(np.float64)
    e_plain, f_plain = network(plain, water.topology, positions, cell)
    e_prior, f_prior = network(prior, water.topology, positions, cell)
    # the prior by hand: each pair of atoms of different molecules within the cutoff once
    graph = build_graph(water.topology, positions, cell, CUTOFF)
    sender, receiver = graph.edge_index
    shifts = graph.edge_shift.double() @ torch.from_numpy(cell)
    r = torch.linalg.vector_norm(
        torch.from_numpy(positions)[sender] - torch.from_numpy(positions)[receiver] + shifts, dim=1
    )
    x = torch.as_tensor(water.topology.node_features, dtype=torch.float64)
    other = torch.as_tensor(water.topology.molecules)[sender] != torch.as_tensor(water.topology.molecules)[receiver]
    eps = torch.sqrt(x[sender, 1] * x[receiver, 1])
    sigma = 0.5 * (x[sender, 2] + x[receiver, 2])
    by_hand = 0.5 * (2.0 * 4 * eps * (sigma / r) ** 12 * polynomial_envelope(r, CUTOFF, 6))[other].sum()
    assert float(by_hand) > 1.0  # O-O pairs inside the cutoff: the check is not empty
    assert e_prior - e_plain == pytest.approx(float(by_hand), rel=1e-9)  # distances in float64, as the model's
    e_tab, f_tab = tabulated(TabulatedNequIP(prior, intervals=4096), water.topology, positions, cell, skin=1.0)
    assert abs(e_tab - e_prior) < 1e-7 * abs(e_prior)
    assert np.abs(f_tab - f_prior).max() < 1e-6 * np.abs(f_prior).max()
    assert np.abs(f_prior - f_plain).max() > 1e-3


def _strained(positions, cell, strain):
    deformation = np.eye(3) + strain
    return positions @ deformation, cell @ deformation


def test_virial_is_minus_the_strain_derivative_of_the_energy(water, tmp_path):
    """ModelForces' virial (network, walls, repulsion prior) against central finite differences of the
    energy of the strained frame (positions and cell deformed alike), with a wall acting."""
    from gnnmd.inference.forces import ModelForces
    from gnnmd.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = NequIP(channels=8, l_max=1, layers=2, cutoff=CUTOFF, n_basis=6, radial_hidden=16, repulsion=1.0)
    normalisation = {"model_fit": model.fit_scale_shift(water)}
    path = save_checkpoint(
        tmp_path / "m.pt", model, type_table=water.topology.type_table(), normalisation=normalisation
    )
    forces_of = ModelForces(path, water.topology, skin=0.0)
    forces_of.virial = True
    positions, cell = squeezed(water, 1, distance=0.7), water.cells[1].astype(np.float64)
    forces_of(positions, cell)
    assert forces_of.wall_active  # the squeezed bond is inside its wall
    virial = forces_of.last_virial
    h = 2e-3
    for a, b in ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2)):
        strain = np.zeros((3, 3))
        strain[a, b] = strain[b, a] = h / 2 if a != b else h
        plus = forces_of(*_strained(positions, cell, strain))[1]
        minus = forces_of(*_strained(positions, cell, -strain))[1]
        # dE = sum_ab D_ab strain_ab: a symmetric shear of h/2 in ab and ba measures (D_ab + D_ba) / 2
        assert virial[a, b] == pytest.approx(-(plus - minus) / (2 * h), rel=2e-3, abs=0.05), (a, b)
    assert np.abs(virial).max() > 10  # forces do work under strain: the check is not empty
