"""The rigid torsion scan: LAMMPS' energy of one molecule alone as a dihedral turns, each pair weighted by
the reference's special_bonds (here only the 1-4 pair moves, at half weight), and a model's beside it."""

import numpy as np
import pytest

from gnnmd.data import Frames, read_topology
from gnnmd.data.forcefield import ForceField
from gnnmd.data.topology import molecule_topology
from gnnmd.lammps.torsion import dihedral_angle, lone_coulomb, torsion_scan, turned
from gnnmd.models import build_model
from gnnmd.models.checkpoint import save_checkpoint
from gnnmd.models.electrostatics import PMESettings

CHAINS_FF = """pair_style lj/cut/coul/long 10
pair_modify mix geometric
bond_style harmonic
bond_coeff 1 300 1.2
angle_style harmonic
angle_coeff 1 50 110
special_bonds lj/coul 0 0 0.5
kspace_style pppm 1e-6
"""


def _frames(data_file) -> Frames:
    topology = read_topology(data_file)
    with open(data_file) as file:
        rows = [line.split() for line in file if len(line.split()) == 7 and line.split()[0].isdigit()]
    positions = np.array([[float(v) for v in row[4:7]] for row in sorted(rows, key=lambda r: int(r[0]))])
    return Frames(topology, positions[None].astype(np.float32), np.zeros((1, len(positions), 3), np.float32),
                  np.eye(3, dtype=np.float32)[None] * 16.0, None, np.zeros(1, dtype=np.int64),
                  np.zeros(1, dtype=np.int64))  # fmt: skip


def test_turning_sets_the_dihedral_and_keeps_the_rest_rigid(chains_data_file):
    frames = _frames(chains_data_file)
    alone, atoms = molecule_topology(frames.topology, 2)
    assert list(atoms) == [4, 5, 6, 7] and alone.bonds.tolist() == [[0, 1], [1, 2], [2, 3]]
    start = frames.positions[0][atoms].astype(np.float64)
    for angle in (-150.0, -60.0, 0.0, 75.0, 180.0):
        moved = turned(start, alone, [0, 1, 2, 3], angle)
        wrapped = (dihedral_angle(moved, [0, 1, 2, 3]) - angle + 180.0) % 360.0 - 180.0
        assert wrapped == pytest.approx(0.0, abs=1e-6)
        bonded = np.linalg.norm(np.diff(moved, axis=0), axis=1)
        np.testing.assert_allclose(bonded, np.linalg.norm(np.diff(start, axis=0), axis=1), atol=1e-9)
        assert np.linalg.norm(moved[3] - moved[1]) == pytest.approx(np.linalg.norm(start[3] - start[1]))


def test_the_reference_barrier_is_the_half_weighted_1_4_pair(chains_data_file, tmp_path):
    frames = _frames(chains_data_file)
    angles = np.arange(-180, 181, 30)
    path = tmp_path / "untrained.pt"
    model = build_model("nequip", cutoff=4.0, channels=4, layers=1)
    save_checkpoint(path, model, type_table=frames.topology.type_table(), normalisation={"force_scale": 1.0})
    scan = torsion_scan(frames, chains_data_file, ForceField.parse(CHAINS_FF, "chains.ff"), (0, 1, 2, 3), angles, path)
    topology = frames.topology
    alone, atoms = molecule_topology(topology, 1)
    start = frames.positions[0][atoms].astype(np.float64)
    eps, sigma = np.sqrt(topology.epsilon[0] * topology.epsilon[3]), np.sqrt(topology.sigma[0] * topology.sigma[3])
    by_hand = []
    for angle in angles:
        r = np.linalg.norm(np.subtract(*turned(start, alone, [0, 1, 2, 3], float(angle))[[3, 0]]))
        lj = 4 * eps * ((sigma / r) ** 12 - (sigma / r) ** 6)
        by_hand.append(0.5 * (lj + 332.06371 * topology.charges[0] * topology.charges[3] / r))
    by_hand = np.array(by_hand) - min(by_hand)
    assert scan["reference_barrier"] == pytest.approx(by_hand.max(), abs=0.02) and by_hand.max() > 1.0
    np.testing.assert_allclose(scan["reference"], by_hand, atol=0.02)  # PPPM's error on a lone pair
    assert len(scan["model"]) == len(angles) and np.isfinite(scan["model_barrier"])
    # a PME model's Coulomb part for a lone molecule: only the 1-4 pair moves, at half weight
    settings = PMESettings(special=(0.0, 0.0, 0.5), angle=False)
    coulomb = [lone_coulomb(alone, turned(start, alone, [0, 1, 2, 3], float(a)), settings) for a in angles]
    r = [np.linalg.norm(np.subtract(*turned(start, alone, [0, 1, 2, 3], float(a))[[3, 0]])) for a in angles]
    expected = 0.5 * 332.06371 * topology.charges[0] * topology.charges[3] / np.array(r)
    np.testing.assert_allclose(np.array(coulomb) - coulomb[0], expected - expected[0], atol=1e-9)
