"""The corresponding-states model (csnequip, gnnmd.models.states): forces are the gradient of its energy,
its pair part obeys corresponding states exactly (a system with every length times a and every epsilon
times b has b times the pair energy), and it refuses a system it cannot represent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnmd.data import load_frames
from gnnmd.data.graphs import GraphBuilder
from gnnmd.models import build_model


def _model(frames, **hyper):
    torch.manual_seed(0)
    model = build_model("csnequip", channels=8, layers=2, l_max=1, cutoff=3.0, **hyper).double()
    model.fit_priors(frames)
    return model.eval()


def _graph(frames, k: int, positions=None, cell=None, features=None):
    builder = GraphBuilder(frames.topology, 3.0)
    positions = frames.positions[k].astype(np.float64) if positions is None else positions
    cell = frames.cells[k].astype(np.float64) if cell is None else cell
    graph = builder(positions, cell)
    graph.pos, graph.cell = torch.tensor(positions), torch.tensor(cell).reshape(1, 3, 3)
    if features is not None:
        graph.x = torch.tensor(features)
    return graph


def test_forces_are_minus_the_gradient_of_the_energy(water_run):
    frames = load_frames(water_run)
    model = _model(frames)
    positions = frames.positions[2].astype(np.float64)
    forces = model(_graph(frames, 2))["forces"].numpy()
    step = 1e-5
    for atom, axis in ((0, 0), (4, 1), (40, 2)):
        plus, minus = positions.copy(), positions.copy()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        energies = [float(model(_graph(frames, 2, positions=p))["energy"]) for p in (plus, minus)]
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * step), rel=1e-5, abs=1e-7)
    assert np.abs(forces).mean() > 1e-3


def test_pair_part_obeys_corresponding_states(argon_run):
    """Argon with lengths x 1.3 and epsilon x 2: the pair energy doubles and forces scale by 2 / 1.3."""
    frames = load_frames(argon_run)
    model = _model(frames)
    model.pair_core.fill_(0.0)  # the wall is absolute in stiffness: leave it out of the scaling
    features = frames.topology.node_features.astype(np.float64)
    scaled = features * np.array([1.0, 2.0, 1.3])
    graphs = [
        _graph(frames, 1, features=features),
        _graph(
            frames,
            1,
            positions=frames.positions[1] * np.float64(1.3),
            cell=frames.cells[1] * np.float64(1.3),
            features=scaled,
        ),
    ]
    base, other = (model(g) for g in graphs)
    # argon has no molecular edges: all its forces are the pair part's
    assert torch.allclose(other["forces"], base["forces"] * 2.0 / 1.3, rtol=1e-9, atol=1e-12)
    assert np.abs(base["forces"].numpy()).mean() > 1e-4
    zeros = torch.zeros(len(features), dtype=torch.long)
    pair = [float(model.pair_energies(g, g.pos, g.cell, zeros).sum()) for g in graphs]
    assert pair[1] == pytest.approx(2.0 * pair[0], rel=1e-9) and abs(pair[0]) > 1e-6


def test_the_pair_part_reaches_beyond_the_graph(water_run):
    """Its pairs are the O-O pairs (epsilon > 0) out to pair_cutoff x sigma, though the graph is 3 A."""
    from gnnmd.models.states import _pairs_of_graphs

    frames = load_frames(water_run)
    x = torch.as_tensor(frames.topology.node_features, dtype=torch.float64)
    pos = torch.as_tensor(frames.positions[0], dtype=torch.float64)
    cell = torch.as_tensor(frames.cells[0], dtype=torch.float64)[None]
    ((i, j, shifts),) = list(_pairs_of_graphs(x, pos, cell, torch.zeros(len(pos), dtype=torch.long), 2.5))
    r = torch.linalg.vector_norm(pos[j] - pos[i] + shifts, dim=1)
    assert bool((x[i, 1] > 0).all() and (x[j, 1] > 0).all())
    assert float(r.max()) > 3.0 and float(r.max()) < 2.5 * 3.165
    oxygen = int((x[:, 1] > 0).sum())
    assert len(i) > oxygen  # many pairs per O


def test_a_molecule_with_two_lennard_jones_atoms_is_refused(water_run):
    from dataclasses import replace

    frames = load_frames(water_run)
    topology = replace(frames.topology, epsilon=np.full_like(frames.topology.epsilon, 0.1))
    frames = replace(frames, topology=topology)  # every atom of a water molecule with epsilon > 0
    model = build_model("csnequip", channels=8, layers=1, l_max=1, cutoff=3.0)
    with pytest.raises(ValueError, match="at most one atom with epsilon > 0 per molecule"):
        model.fit_priors(frames)


def test_figure_of_the_learned_reduced_pair_curve(argon_run, tmp_path):
    from gnnmd.analysis.figures import plot_reduced_pair_curve
    from gnnmd.models.checkpoint import save_checkpoint

    frames = load_frames(argon_run)
    model = _model(frames).float()
    path = save_checkpoint(tmp_path / "cs.pt", model, type_table=frames.topology.type_table(), normalisation={})
    figure = plot_reduced_pair_curve(path, tmp_path / "pair.png", "test")
    assert figure.stat().st_size > 5000


def _checkpoint(frames, path):
    from gnnmd.models.checkpoint import save_checkpoint

    model = _model(frames, pair_cutoff=2.5)
    return save_checkpoint(path, model.float(), type_table=frames.topology.type_table(), normalisation={})


def _squeezed_pair(frames, k: int) -> np.ndarray:
    """Frame k with its two closest O atoms (of different molecules) moved to 0.6 sigma: inside the wall."""
    positions = frames.positions[k].astype(np.float64).copy()
    oxygen = np.flatnonzero(frames.topology.node_features[:, 1] > 0)
    a, b = positions[oxygen[0]], positions[oxygen[1:]]
    cell = np.diag(frames.cells[k]).astype(np.float64)
    d = b - a
    d -= cell * np.round(d / cell)
    nearest = int(np.argmin(np.linalg.norm(d, axis=1)))
    shift = (0.6 * 3.165 / np.linalg.norm(d[nearest]) - 1.0) * d[nearest]
    molecule = frames.topology.molecules == frames.topology.molecules[oxygen[1 + nearest]]
    positions[molecule] += shift  # the whole molecule, so that only the pair part is off the data
    return positions


@pytest.mark.parametrize("system", ["water", "argon"])
def test_md_engine_gives_the_networks_forces_energy_and_virial(system, water_run, argon_run, tmp_path):
    """ModelForces runs csnequip tabulated (its NequIP on the pairs within a molecule, the pair part as a
    spline on its own neighbour list with a skin): along a jittered trajectory, with the reduced wall
    acting, its forces and energy are the network's (tabulate=False) to float32 noise, and its virial is
    minus the strain derivative of its energy."""
    from gnnmd.inference import ModelForces

    frames = load_frames(water_run if system == "water" else argon_run)
    path = _checkpoint(frames, tmp_path / "cs.pt")
    fast = ModelForces(path, frames.topology, electrostatics=False)
    exact = ModelForces(path, frames.topology, electrostatics=False, tabulate=False)
    assert fast.pair_part is not None and fast.supports_virial and not exact.supports_virial
    rng = np.random.default_rng(0)
    positions, cell = _squeezed_pair(frames, 3), frames.cells[3].astype(np.float64)
    for _ in range(8):
        positions = positions + rng.normal(scale=0.03, size=positions.shape)
        (f_fast, e_fast), (f_exact, e_exact) = fast(positions, cell), exact(positions, cell)
        scale = np.abs(f_exact).max()
        assert np.abs(f_fast - f_exact).max() < 1e-4 * scale and e_fast == pytest.approx(e_exact, rel=1e-5, abs=1e-3)
    assert fast.wall_active and fast.wall_contacts == 8  # the squeezed pair is inside the reduced wall
    assert 1 <= fast.pair_list.rebuilds < 8
    fast.virial = True
    fast(positions, cell)
    virial, h = fast.last_virial, 2e-3
    for a, b in ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2)):
        strain = np.zeros((3, 3))
        strain[a, b] = strain[b, a] = h / 2 if a != b else h
        energies = [fast(positions @ (np.eye(3) + s), cell @ (np.eye(3) + s))[1] for s in (strain, -strain)]
        assert virial[a, b] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), rel=5e-3, abs=0.05), (a, b)
    assert np.abs(virial).max() > 1


def test_below_the_data_the_pair_function_keeps_rising():
    """The shipped water model: its network's g turns over below the shortest training distance x_e (the
    pair collapse of MD at 370 K); the pair function continues g there with value and slope continuous
    and keeps rising as x falls."""
    from pathlib import Path

    from gnnmd.models.checkpoint import load_model

    model, _ = load_model(Path(__file__).resolve().parent.parent / "benchmarks/models/csnequip-pme-water/best.pt")
    model = model.double()
    edge = float(model.pair_edge)
    assert edge == pytest.approx(float(model.pair_core) / model.core_margin)  # from the wall of an older checkpoint
    network = model.pair_network(torch.tensor([0.65, 0.70], dtype=torch.float64))
    assert float(network[0]) < float(network[1])  # the network alone: less repulsive at shorter distance
    x = torch.linspace(0.3, edge + 0.1, 2001, dtype=torch.float64).requires_grad_(True)
    g = model.pair_function(x)
    (slope,) = torch.autograd.grad(g.sum(), x)
    below = x.detach() < edge
    assert bool((slope[below] < 0).all()) and float(g[0]) > 1e4  # steeper and steeper inwards
    at = torch.tensor([edge - 1e-9, edge + 1e-9], dtype=torch.float64, requires_grad=True)
    g_at = model.pair_function(at)
    (slope_at,) = torch.autograd.grad(g_at.sum(), at)
    assert float(g_at[0]) == pytest.approx(float(g_at[1]), rel=1e-6)
    assert float(slope_at[0]) == pytest.approx(float(slope_at[1]), rel=1e-4)


def test_fine_tuning_keeps_the_parents_edge_when_it_is_shorter(argon_run):
    """The edge x_e is where g stops being learned: fitting on new data moves it inwards, never outwards."""
    frames = load_frames(argon_run)
    model = _model(frames)
    own = float(model.pair_edge)
    assert 0.8 < own < 1.2 and float(model.pair_core) == pytest.approx(model.core_margin * own)
    model.pair_edge.fill_(0.7)  # as if its parent (water) had seen O-O pairs at 0.7 sigma
    model.fit_priors(frames)
    assert float(model.pair_edge) == pytest.approx(0.7) and float(model.pair_core) == pytest.approx(0.63)
