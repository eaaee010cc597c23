"""The 1-4 edge class in the one edge layout: found as LAMMPS' special list finds 1-4 pairs, seen by every
family, tabulated alike; models made before it (three classes) still load and see a 1-4 pair as nonbonded."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gnnmd.data import Frames, build_graph, read_topology
from gnnmd.data.graphs import (
    ANGLE,
    BOND,
    BOND_ONEHOT,
    DIHEDRAL,
    EDGE_CLASSES,
    LEGACY_BOND_CLASSES,
    NONBONDED,
    GraphBuilder,
    VerletList,
    model_onehot,
)
from gnnmd.inference.tabulated_nequip import TabulatedNequIP
from gnnmd.models import build_model
from gnnmd.models.checkpoint import load_model

CUTOFF = 4.5


def _chains(data_file, n_frames=3):
    """Frames of the chains (positions jiggled, random forces: enough to fit scales and walls)."""
    topology = read_topology(data_file)
    rng = np.random.default_rng(5)
    with open(data_file) as file:
        rows = [line.split() for line in file if len(line.split()) == 7 and line.split()[0].isdigit()]
    start = np.array([[float(v) for v in row[4:7]] for row in sorted(rows, key=lambda r: int(r[0]))])
    positions = np.stack([start + rng.normal(0, 0.05, start.shape) for _ in range(n_frames)]).astype(np.float32)
    return Frames(topology=topology, positions=positions, forces=rng.normal(0, 3, positions.shape).astype(np.float32),
                  cells=np.tile(np.eye(3, dtype=np.float32) * 16.0, (n_frames, 1, 1)), energies=None,
                  timesteps=np.arange(n_frames), segments=np.zeros(n_frames, dtype=np.int64))  # fmt: skip


def test_a_chain_has_every_class(chains_data_file):
    """In a four-atom chain: three bonds, one listed angle's ends (the other 1-3 pair, not listed, stays
    nonbonded as `special_bonds angle yes` and the study's layout have it), one 1-4 pair."""
    frames = _chains(chains_data_file)
    graph = build_graph(frames.topology, frames.positions[0], frames.cells[0], cutoff=8.0)
    assert EDGE_CLASSES[DIHEDRAL] == "dihedral" and graph.edge_attr[:, BOND_ONEHOT].sum(dim=1).eq(1).all()
    classes = graph.edge_attr[:, BOND_ONEHOT].argmax(dim=1).numpy()
    sender, receiver = graph.edge_index.numpy()
    label = {}
    for a, b, c in zip(receiver, sender, classes):
        if frames.topology.molecules[a] == frames.topology.molecules[b] == 1:
            label.setdefault((min(a, b), max(a, b)), set()).add(int(c))
    assert label == {(0, 1): {BOND}, (1, 2): {BOND}, (2, 3): {BOND}, (0, 2): {ANGLE}, (1, 3): {NONBONDED},
                     (0, 3): {DIHEDRAL}}  # fmt: skip
    # between molecules: nonbonded only
    other = frames.topology.molecules[sender] != frames.topology.molecules[receiver]
    assert set(classes[other]) == {NONBONDED}


def test_a_model_before_the_1_4_class_sees_a_1_4_pair_as_nonbonded(chains_data_file):
    frames = _chains(chains_data_file)
    graph = build_graph(frames.topology, frames.positions[0], frames.cells[0], cutoff=CUTOFF)
    legacy = model_onehot(graph.edge_attr, LEGACY_BOND_CLASSES)
    dihedral = graph.edge_attr[:, DIHEDRAL] == 1
    assert dihedral.any() and legacy.shape[1] == 3 and torch.all(legacy[dihedral, NONBONDED] == 1)
    assert torch.equal(legacy[~dihedral], graph.edge_attr[~dihedral][:, :3])
    # the same graph with its 1-4 pairs relabelled nonbonded gives a three-class model the same forces;
    # a four-class model tells them apart
    relabelled = graph.clone()
    relabelled.edge_attr[dihedral, NONBONDED], relabelled.edge_attr[dihedral, DIHEDRAL] = 1.0, 0.0
    for family in ("mpnn", "eqforce"):
        torch.manual_seed(0)
        old = build_model(family, cutoff=CUTOFF, edge_classes=LEGACY_BOND_CLASSES).eval()
        torch.manual_seed(0)
        new = build_model(family, cutoff=CUTOFF).eval()
        assert new.n_edge_classes == 4 and old.n_edge_classes == 3
        torch.testing.assert_close(old(graph)["forces"], old(relabelled)["forces"])
        assert not torch.allclose(new(graph)["forces"], new(relabelled)["forces"])


@pytest.mark.parametrize("edge_classes", [LEGACY_BOND_CLASSES, len(EDGE_CLASSES)])
def test_tabulated_energy_model_agrees_on_a_molecule_with_1_4_pairs(chains_data_file, edge_classes):
    """The tabulated form (MD's) equals the network on chains, walls and the 1-4 class included, for models
    with and without the class."""
    frames = _chains(chains_data_file)
    torch.manual_seed(1)
    model = build_model("nequip", cutoff=CUTOFF, channels=8, layers=2, n_basis=6, radial_hidden=16,
                        edge_classes=edge_classes).double()  # fmt: skip
    model.fit_priors(frames)
    model.eval()
    assert model.core_radius.shape[-1] == edge_classes
    if edge_classes == len(EDGE_CLASSES):  # the walls know the 1-4 pairs' distance range
        assert float(model.stretch_radius[..., DIHEDRAL].max()) > 0
    positions, cell = frames.positions[1].astype(np.float64), frames.cells[1].astype(np.float64)
    graph = build_graph(frames.topology, positions, cell, CUTOFF)
    graph.pos, graph.cell = torch.from_numpy(positions), torch.from_numpy(cell).reshape(1, 3, 3)
    graph.edge_shift = graph.edge_shift.double()
    out = model(graph)
    engine = TabulatedNequIP(model, intervals=4096)
    verlet = VerletList(GraphBuilder(frames.topology, CUTOFF), skin=0.0)
    verlet.update(positions, cell)
    atoms = engine.atoms(torch.from_numpy(frames.topology.node_features))
    pos = torch.from_numpy(positions).requires_grad_(True)
    near = verlet.within(pos, CUTOFF)
    i, j, c, s = (t.index_select(0, near) for t in (verlet.i, verlet.j, verlet.pair_class, verlet.shift_vectors))
    energy = engine.energy(atoms, pos, engine.pairs(i, j, c, s.double()))
    (grad,) = torch.autograd.grad(energy, pos)
    assert float(energy.detach()) == pytest.approx(float(out["energy"].sum()), rel=1e-6, abs=1e-6)
    np.testing.assert_allclose(-grad.numpy(), out["forces"].detach().numpy(), atol=1e-5)


def test_shipped_three_class_checkpoints_still_load_and_run():
    shipped = Path(__file__).resolve().parents[1] / "benchmarks" / "models"
    for name in ("mpnn-water", "eqforce-water", "nequip-pme-water", "csnequip-pme-water-al-stress"):
        model, info = load_model(shipped / name / "best.pt")
        assert model.n_edge_classes == LEGACY_BOND_CLASSES == info.hyper["edge_classes"]
