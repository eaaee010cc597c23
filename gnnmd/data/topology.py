"""One system's atoms: per-atom physical parameters, molecules, bonds and angles, and its type table.

Atoms are described by (charge, epsilon, sigma), not by a species index, so that a model applies to
any system; two types are the same type when these agree to TYPE_MATCH_TOLERANCE."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

NODE_FEATURES = ("charge", "epsilon", "sigma")  # the columns of Topology.node_features, a graph's x
N_NODE_FEATURES = len(NODE_FEATURES)
TYPE_MATCH_TOLERANCE = 1e-4  # |(q, eps, sigma) - other| below this (each entry) is the same type


def same_type(a, b) -> bool:
    """Whether two (q, eps, sigma) rows describe the same atom type."""
    return bool(
        np.all(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) < TYPE_MATCH_TOLERANCE)
    )


@dataclass
class Topology:
    """Per-atom parameters and connectivity of one system, read from its LAMMPS data file.

    Indices are 0-based atom positions in id order. `type_ids` are the LAMMPS type numbers; the
    type table (`table_*`) has one row per type, and per-atom `types` index into it."""

    types: np.ndarray  # (N,) int64, row in the type table
    charges: np.ndarray  # (N,) float64, e
    epsilon: np.ndarray  # (N,) float64, kcal/mol (Lennard-Jones, from Pair Coeffs)
    sigma: np.ndarray  # (N,) float64, A
    molecules: np.ndarray  # (N,) int64
    bonds: np.ndarray  # (B, 2) int64
    angles: np.ndarray  # (A, 3) int64
    table_type_ids: np.ndarray  # (T,) int64, LAMMPS type numbers
    table_names: np.ndarray  # (T,) str, element guessed from the mass
    table_masses: np.ndarray  # (T,) float64
    table_charges: np.ndarray  # (T,) float64
    table_epsilon: np.ndarray  # (T,) float64
    table_sigma: np.ndarray  # (T,) float64

    @property
    def n_atoms(self) -> int:
        return len(self.types)

    @property
    def node_features(self) -> np.ndarray:
        """(N, 3) float32: charge, epsilon, sigma: physical parameters, so no embedding is system-bound."""
        return np.stack([self.charges, self.epsilon, self.sigma], axis=1).astype(np.float32)

    def type_table(self) -> list[dict]:
        return [
            {
                "type_id": int(t),
                "name": str(n),
                "mass": float(m),
                "charge": float(q),
                "epsilon": float(e),
                "sigma": float(s),
            }
            for t, n, m, q, e, s in zip(
                self.table_type_ids,
                self.table_names,
                self.table_masses,
                self.table_charges,
                self.table_epsilon,
                self.table_sigma,
            )
        ]

    def same_as(self, other: Topology) -> bool:
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))


def special_neighbours(topology: Topology, angle: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 1-2, 1-3 and 1-4 pairs (each (P, 2), i < j, sorted) as LAMMPS' special list finds them: one, two
    and three bonds apart, each pair in the nearest of the three only. With `angle` (special_bonds
    `angle yes`) a 1-3 pair counts only if it is the two ends of a listed angle. Sparse products of the
    bond graph, so a million-atom system takes a moment, not a Python loop."""
    from scipy import sparse

    n = topology.n_atoms
    bonds = np.asarray(topology.bonds, dtype=np.int64).reshape(-1, 2)
    ones = np.ones(2 * len(bonds), dtype=np.int64)
    adjacency = sparse.csr_matrix((ones, (bonds.ravel(), bonds[:, ::-1].ravel())), shape=(n, n))
    adjacency.data[:] = 1  # a bond listed twice is one bond
    reach, seen, levels = adjacency.copy(), sparse.identity(n, dtype=np.int64, format="csr"), []
    for _ in range(3):
        reach.data[:] = 1
        new = reach - reach.multiply(seen)  # reached now, not at a shorter distance (or the atom itself)
        new.eliminate_zeros()
        upper = sparse.triu(new, k=1).tocoo()
        order = np.lexsort((upper.col, upper.row))
        levels.append(np.stack([upper.row[order], upper.col[order]], axis=1).astype(np.int64))
        seen = ((seen + new) > 0).astype(np.int64)
        reach = new @ adjacency
    if angle:
        ends = np.sort(np.asarray(topology.angles, dtype=np.int64).reshape(-1, 3)[:, [0, 2]], axis=1)
        listed = np.isin(levels[1][:, 0] * n + levels[1][:, 1], ends[:, 0] * n + ends[:, 1])
        levels[1] = levels[1][listed]
    return levels[0], levels[1], levels[2]


def molecule_topology(topology: Topology, molecule: int) -> tuple[Topology, np.ndarray]:
    """(the topology of one molecule alone, the atom numbers it had in `topology`): its atoms in order,
    its bonds and angles renumbered, the type table kept whole."""
    atoms = np.flatnonzero(np.asarray(topology.molecules) == molecule)
    if len(atoms) == 0:
        raise ValueError(f"the system has no molecule {molecule}")
    new = np.full(topology.n_atoms, -1, dtype=np.int64)
    new[atoms] = np.arange(len(atoms))

    def inside(table: np.ndarray) -> np.ndarray:
        table = np.asarray(table, dtype=np.int64)
        return new[table[np.all(new[table] >= 0, axis=1)]] if len(table) else table

    per_atom = {f: getattr(topology, f)[atoms] for f in ("types", "charges", "epsilon", "sigma", "molecules")}
    table = {f.name: getattr(topology, f.name) for f in fields(topology) if f.name.startswith("table_")}
    return Topology(**per_atom, bonds=inside(topology.bonds), angles=inside(topology.angles), **table), atoms
