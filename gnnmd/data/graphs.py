"""Periodic graphs of one frame: an O(N) neighbour list (vesin cell lists) within a cutoff, node features
(q, epsilon, sigma) and edge features (bond-class one-hot, distance, unit direction).

Conventions (PyG): edge_index[0] is the source j, edge_index[1] the receiving atom i, and
edge_vec = pos[j] - pos[i] + edge_shift @ cell is the vector from i to that image of j."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch_geometric.data import Data

from gnnmd.data.topology import Topology, special_neighbours

# The edge layout, defined here only; every model takes its columns from these names.
# the edge one-hot: another molecule (or no bond path) | bonded (1-2) | the ends of a listed angle (1-3) |
# three bonds apart (1-4, the ends of a dihedral: what special_bonds' third weight scales)
EDGE_CLASSES = ("nonbonded", "bond", "angle", "dihedral")
NONBONDED, BOND, ANGLE, DIHEDRAL = range(len(EDGE_CLASSES))
N_BOND_CLASSES = len(EDGE_CLASSES)
# the study's three classes: a model made before the 1-4 class saw a 1-4 pair as nonbonded, and still does
LEGACY_BOND_CLASSES = 3
EDGE_ATTR_COLUMNS = (*EDGE_CLASSES, "distance", "ux", "uy", "uz")
N_EDGE_FEATURES = len(EDGE_ATTR_COLUMNS)
BOND_ONEHOT = slice(0, N_BOND_CLASSES)  # edge_attr[:, BOND_ONEHOT]: the bond-class one-hot
DISTANCE = EDGE_ATTR_COLUMNS.index("distance")  # edge_attr[:, DISTANCE]: |r_j - r_i|
UNIT_VECTOR = slice(EDGE_ATTR_COLUMNS.index("ux"), EDGE_ATTR_COLUMNS.index("uz") + 1)  # (r_j - r_i) / distance


def model_onehot(edge_attr: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The bond-class one-hot as a model of `n_classes` classes sees it: the graph's own, or (a model made
    before the 1-4 class) the first three with every later class counted as nonbonded."""
    onehot = edge_attr[:, BOND_ONEHOT]
    if n_classes == N_BOND_CLASSES:
        return onehot
    return torch.cat([onehot[:, :1] + onehot[:, n_classes:].sum(dim=1, keepdim=True), onehot[:, 1:n_classes]], dim=1)


def model_class_ids(classes, n_classes: int):
    """Integer bond classes (numpy or torch) as a model of `n_classes` classes sees them (model_onehot)."""
    return classes if n_classes == N_BOND_CLASSES else classes * (classes < n_classes)


# more neighbours per atom than this is taken as a mistaken cutoff rather than a request
MAX_NEIGHBOURS_PER_ATOM = 20_000


def check_cutoff(cutoff: float, n_atoms: int, cell: np.ndarray) -> None:
    """Refuse cutoffs that cannot be meant: not a positive number, or so long the graph would explode."""
    if not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive number of Angstrom, got {cutoff!r}")
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    if volume <= 0:
        raise ValueError(f"the cell has zero volume: {np.asarray(cell).tolist()}")
    expected = n_atoms / volume * 4.0 / 3.0 * math.pi * cutoff**3
    if expected > MAX_NEIGHBOURS_PER_ATOM:
        raise ValueError(
            f"cutoff {cutoff} A would give ~{expected:.0f} neighbours per atom (at this density); "
            f"the limit is {MAX_NEIGHBOURS_PER_ATOM}. Is the cutoff in Angstrom?"
        )


def neighbor_list(positions: np.ndarray, cell: np.ndarray, cutoff: float):
    """All ordered pairs (i, j, image) closer than `cutoff` under periodic boundaries, any cell shape,
    including cells shorter than twice the cutoff (several images of one atom).

    Returns receivers i, sources j, integer shifts S (E, 3) and vectors D = r_j - r_i + S @ cell."""
    i, j, shifts, vectors = _vesin(positions, cell, cutoff, "ijSD")
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64), vectors


def _vesin(positions, cell, cutoff: float, quantities: str, full_list: bool = True) -> list[np.ndarray]:
    from vesin import NeighborList

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    check_cutoff(cutoff, len(positions), cell)
    calculator = NeighborList(cutoff=float(cutoff), full_list=full_list)
    return calculator.compute(points=positions, box=cell, periodic=True, quantities=quantities)


def _pair_keys(pairs: np.ndarray, n_atoms: int) -> np.ndarray:
    """Sorted unique keys i * N + j for both orders of each pair."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    return np.unique(np.concatenate([a * n_atoms + b, b * n_atoms + a]))


class GraphBuilder:
    """Turns frames of one system into PyG graphs; topology-derived parts are computed once."""

    def __init__(self, topology: Topology, cutoff: float):
        self.topology = topology
        self.cutoff = float(cutoff)
        n = topology.n_atoms
        self.x = torch.from_numpy(topology.node_features)
        self.atom_type = torch.from_numpy(topology.types.astype(np.int64))
        self.bond_keys = _pair_keys(topology.bonds, n)
        self.angle_keys = _pair_keys(topology.angles[:, [0, 2]] if len(topology.angles) else topology.angles, n)
        self.dihedral_keys = _pair_keys(special_neighbours(topology)[2], n)

    def edge_classes(
        self, i: np.ndarray, j: np.ndarray, distances: np.ndarray, nearest_only: bool = True
    ) -> np.ndarray:
        """Bond class per edge. A bonded pair is bonded only through its nearest image; further images
        (cells shorter than twice the cutoff) are nonbonded neighbours. `nearest_only=False` labels every
        edge between bonded atoms (explicit copies of atoms in a cluster, one image each, gnnmd.inference.domain)."""
        n = self.topology.n_atoms
        keys = i * n + j
        classes = np.full(len(keys), NONBONDED, dtype=np.int64)
        for label, table in ((BOND, self.bond_keys), (ANGLE, self.angle_keys), (DIHEDRAL, self.dihedral_keys)):
            if len(table) == 0:
                continue
            # the tables are sorted: a binary search per edge (np.isin would sort all the edges' keys)
            hit = np.flatnonzero(table[np.minimum(np.searchsorted(table, keys), len(table) - 1)] == keys)
            if len(hit) == 0:
                continue
            if not nearest_only:
                classes[hit] = label
                continue
            order = hit[np.lexsort((distances[hit], keys[hit]))]
            _, first = np.unique(keys[order], return_index=True)
            classes[order[first]] = label
        return classes

    def __call__(
        self,
        positions: np.ndarray,
        cell: np.ndarray,
        forces: np.ndarray | None = None,
        energy: float | None = None,
    ) -> Data:
        if positions.shape != (self.topology.n_atoms, 3):
            raise ValueError(
                f"positions have shape {positions.shape}, expected ({self.topology.n_atoms}, 3) for this topology"
            )
        i, j, shifts, vectors = neighbor_list(positions, cell, self.cutoff)
        distances = np.linalg.norm(vectors, axis=1)
        classes = self.edge_classes(i, j, distances)
        onehot = np.eye(len(EDGE_CLASSES), dtype=np.float32)[classes]
        units = vectors / distances[:, None]
        edge_attr = np.concatenate([onehot, distances[:, None], units], axis=1).astype(np.float32)
        data = Data(
            x=self.x,
            pos=torch.as_tensor(positions, dtype=torch.float32),
            edge_index=torch.from_numpy(np.stack([j, i])),
            edge_attr=torch.from_numpy(edge_attr),
            edge_vec=torch.from_numpy(vectors.astype(np.float32)),
            edge_shift=torch.from_numpy(shifts.astype(np.float32)),
            cell=torch.as_tensor(np.asarray(cell), dtype=torch.float32).reshape(1, 3, 3),
            atom_type=self.atom_type,
            num_nodes=self.topology.n_atoms,
        )
        if forces is not None:
            data.y = torch.as_tensor(forces, dtype=torch.float32)
        if energy is not None:
            data.energy = torch.tensor([float(energy)], dtype=torch.float64)
        return data


def build_graph(topology: Topology, positions, cell, cutoff: float, forces=None, energy=None) -> Data:
    """One graph; use GraphBuilder directly for many frames of the same system."""
    return GraphBuilder(topology, cutoff)(np.asarray(positions), np.asarray(cell), forces, energy)


class VerletList:
    """The neighbour pairs of one system across MD steps, each pair once (a half list): built with cutoff +
    `skin` and rebuilt only when an atom has moved more than half the skin since the last build, or the
    cell changed. Until then every pair closer than the cutoff is in it (two atoms that each moved less
    than skin/2 came less than a skin closer), so a model that takes the pair vectors from the current
    positions (`vectors`) and gives pairs beyond the cutoff no weight sees what a graph built afresh would
    give it. Bond classes are those of the build (a bonded pair's nearest image stays the nearest unless
    the cell is shorter than ~2x the list's reach). `skin` 0 rebuilds at every call.

    After `update`: `i` <= `j` (torch int64, P), `pair_class` (the edge class of i <- j and of j <- i),
    `shift_vectors` (S @ cell, (P, 3) in `dtype`: the vector from i to that image of j is
    r_j - r_i + S @ cell), `distances` at the build (float64 numpy), `rebuilds` (how many builds so far).
    Pairs are sorted by i, for the locality of sums over neighbours. The list is built on the CPU (MD
    positions live there, in LAMMPS) and its tensors are kept on `device`.

    Options for models with parts of their own (gnnmd.models.states): `cutoff` (default: the builder's),
    `atoms` (the pairs among these atom numbers only) and `molecular_only` (only the pairs within one
    molecule: bond class other than nonbonded)."""

    def __init__(self, builder: GraphBuilder, skin: float = 1.0, device="cpu", dtype=torch.float32,
                 cutoff: float | None = None, atoms=None, molecular_only: bool = False):  # fmt: skip
        if not (math.isfinite(skin) and skin >= 0):
            raise ValueError(f"the neighbour-list skin must be >= 0 A, got {skin!r}")
        self.builder, self.skin, self.device, self.dtype = builder, float(skin), torch.device(device), dtype
        self.reach = (builder.cutoff if cutoff is None else float(cutoff)) + self.skin
        self.atoms = None if atoms is None else np.sort(np.asarray(atoms, dtype=np.int64))
        self.molecular_only = bool(molecular_only)
        self.reference: np.ndarray | None = None
        self.cell: np.ndarray | None = None
        self.rebuilds = 0

    def update(self, positions: np.ndarray, cell: np.ndarray) -> bool:
        """Rebuild if needed for these positions and cell; True if it did."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        if self.reference is not None and self.skin > 0 and np.array_equal(cell, self.cell):
            moved = positions - self.reference
            if float(np.einsum("ij,ij->i", moved, moved).max(initial=0.0)) <= (0.5 * self.skin) ** 2:
                return False
        self.build(positions, cell)
        return True

    def build(self, positions: np.ndarray, cell: np.ndarray) -> None:
        n = self.builder.topology.n_atoms
        if positions.shape != (n, 3):
            raise ValueError(f"positions have shape {positions.shape}, expected ({n}, 3) for this topology")
        points = positions if self.atoms is None else positions[self.atoms]
        i, j, shifts, distances = _vesin(points, cell, self.reach, "ijSd", full_list=False)
        i, j = i.view(np.int64), j.view(np.int64)  # vesin's uint64 indices, < 2^63
        if self.atoms is not None:  # numbers among `atoms` -> atom numbers (same order: atoms are sorted)
            i, j = self.atoms[i], self.atoms[j]
        flip = i > j  # every image of a pair oriented alike, so the nearest-image rule sees them together
        i, j = np.where(flip, j, i), np.where(flip, i, j)
        shifts[flip] *= -1
        order = np.argsort(i, kind="stable")
        i, j, shifts, distances = i[order], j[order], shifts[order], distances[order]
        classes = self.builder.edge_classes(i, j, distances)
        if self.molecular_only:
            keep = classes != NONBONDED
            i, j, shifts, distances, classes = i[keep], j[keep], shifts[keep], distances[keep], classes[keep]
        del flip, order
        to = self.device  # built on the CPU (vesin), used where the model is (copied once per build)
        self.i, self.j = torch.from_numpy(i).to(to), torch.from_numpy(j).to(to)
        self.pair_class = torch.from_numpy(classes).to(to)
        self.shift_vectors = torch.from_numpy(shifts @ cell).to(to, self.dtype)
        self.distances = distances
        self.reference, self.cell = positions.copy(), cell.copy()
        self.rebuilds += 1

    def vectors(self, pos: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """r_j - r_i + S @ cell of every pair (or of the pairs numbered `pairs`) for positions `pos`."""
        i, j, shifts = self.i, self.j, self.shift_vectors
        if pairs is not None:
            i, j, shifts = i.index_select(0, pairs), j.index_select(0, pairs), shifts.index_select(0, pairs)
        return pos.index_select(0, j) - pos.index_select(0, i) + shifts.to(pos.dtype)

    @torch.no_grad()
    def within(self, pos: torch.Tensor, cutoff: float) -> torch.Tensor:
        """Numbers of the pairs closer than `cutoff` at positions `pos`, in the list's order."""
        vectors = self.vectors(pos.detach())
        return torch.nonzero(torch.einsum("pk,pk->p", vectors, vectors) < cutoff * cutoff).squeeze(1)
