"""The energy model's share of one MPI rank in MD across ranks: forces from the atoms a rank owns and
the copies of atoms around them that LAMMPS keeps on it.

LAMMPS splits the box into subdomains, one per rank. A rank owns the atoms of its subdomain ("local")
and keeps current copies of the atoms within the communication cutoff of it ("ghosts", periodic images
included), so its atoms form an open cluster: no cell, no minimum image. The model's energy is a sum of
per-atom terms, each a function of the atoms within L x cutoff of its atom (L message-passing layers),
plus pair terms (prior, walls). A rank computes its share, the per-atom terms of its local atoms and
half of every pair term a local atom takes part in, from the graph of local and ghost atoms; that needs
ghosts out to L x cutoff. Its gradient gives forces on local and on ghost atoms; a ghost's force belongs
to the atom it copies, wherever that is owned, so the forces are summed by global atom id over the
ranks (gnnmd.lammps.md_callback does that, with the energy and the virial). The shares add up to the model's
energy, and every force is the exact gradient of it: the same numbers as one rank's, up to rounding.

Redundant alternative, not taken: ghosts out to 2 L x cutoff let a rank differentiate every term that
touches its atoms and skip the sum, but hold several times more atoms (measured in docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np
import torch

from gnnmd.data.graphs import NONBONDED, GraphBuilder, model_class_ids
from gnnmd.inference.forces import TABULATED_FAMILIES, check_types_known, model_dtype
from gnnmd.inference.tabulated_nequip import TabulatedNequIP
from gnnmd.inference.tabulated_states import TabulatedPairPart
from gnnmd.models.checkpoint import load_model


class DomainForces:
    """Forces (kcal/mol/A) on a rank's local and ghost atoms, its share of the energy (kcal/mol) and of
    the virial (3x3, kcal/mol) for the tabulated energy model (nequip), computed in `precision`
    (model_dtype). The neighbour list of the cluster is built with cutoff + `skin` and rebuilt when LAMMPS
    has rebuilt its ghosts (the atoms or their order changed) or an atom moved more than half the skin, as
    in gnnmd.data.graphs.VerletList; the walls are evaluated on the pairs that can reach one until then."""

    def __init__(self, checkpoint, topology, system: str = "system", allow_unknown_types: bool = False,
                 skin: float = 1.0, precision: str = "float32"):  # fmt: skip
        self.model, self.info = load_model(checkpoint)
        self.model = self.model.to(model_dtype(precision))
        if not (getattr(self.model, "needs_grad", False) and self.model.family in TABULATED_FAMILIES):
            raise ValueError(
                f"{checkpoint}: MD on several MPI ranks needs an energy model (nequip, csnequip); this is a "
                f"{self.info.family} model, which runs on one rank (start gnnmd md without mpiexec)"
            )
        if not allow_unknown_types:
            check_types_known(topology, self.info.type_table, str(checkpoint), system)
        self.model.check_system(topology, f"{checkpoint} on {system}: ")
        self.engine = TabulatedNequIP(self.model)
        self.dtype = self.model.type_scale.dtype
        self.atoms = self.engine.atoms(torch.from_numpy(topology.node_features))
        # csnequip: its nequip on the pairs within a molecule, and its pair part on pairs of its own
        self.pair_part = TabulatedPairPart(self.model, topology) if self.model.family == "csnequip" else None
        self.builder = GraphBuilder(topology, self.model.cutoff)
        self.cutoff, self.skin = float(self.model.cutoff), float(skin)
        self.layers = len(self.engine.layers)
        self.virial = True
        self.last_virial: np.ndarray | None = None
        self.wall_active = False
        self.walls = None
        self._ids: np.ndarray | None = None
        self.periodic, self.cell = (False, False, False), np.zeros((3, 3))
        self.rebuilds = 0

    supports_virial = True

    @property
    def ghost_reach(self) -> float:
        """How far (A) around its subdomain a rank needs ghosts: L x cutoff, or the pair part's reach."""
        return max(self.layers * self.cutoff, self.pair_part.reach if self.pair_part is not None else 0.0)

    def __call__(self, positions: np.ndarray, ids: np.ndarray, nlocal: int, cell: np.ndarray | None = None,
                 periodic=(False, False, False)) -> tuple[np.ndarray, float]:  # fmt: skip
        """Forces on all `positions` (local atoms first, then ghosts; `ids` their 0-based atom numbers in
        the topology) and the rank's share of the energy; its share of the virial in `last_virial`.
        `periodic`: the box directions along which this rank holds the whole (orthogonal) `cell`: there
        the cluster is periodic and the ghosts that are images of its own atoms are left out."""
        positions = np.asarray(positions, dtype=np.float64)
        periodic = tuple(bool(p) for p in periodic) if cell is not None else (False, False, False)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        if self._stale(positions, ids, nlocal, cell, periodic):
            self._build(positions, np.asarray(ids, dtype=np.int64), nlocal, cell, periodic)
        pos = torch.from_numpy(positions[self.used]).to(self.dtype)
        vectors = pos.index_select(0, self.j) - pos.index_select(0, self.i) + self.shift_vectors
        near = torch.nonzero(torch.einsum("pk,pk->p", vectors, vectors) < self.cutoff**2).squeeze(1)
        i, j, weight = self.i[near], self.j[near], self.weight[near]
        shifts = self.shift_vectors[near]
        pairs = self.engine.pairs(i, j, self.pair_class[near], shifts, weight)
        with torch.enable_grad():
            pos.requires_grad_(True)
            strain = pos.new_zeros(3, 3, requires_grad=True)
            energy = self.engine.energy(self.node_atoms, pos, pairs, strain)
            if self.walls is not None:  # the pairs that can reach a wall before the next build
                wi, wj, wshifts, wweight, core, stretch = self.walls
                between = pos[wj] - pos[wi] + wshifts
                r = torch.linalg.vector_norm(between @ (torch.eye(3, dtype=pos.dtype) + strain), dim=1)
                wall = self.engine.wall_energy(r, core, stretch, wweight)
                self.wall_active = bool(wall.detach() > 0)  # on this rank; the caller counts the steps
                energy = energy + wall
            if self.pair_part is not None:
                pi, pj, pshifts, pweight, ids_i, ids_j = self.pair_pairs
                between = (pos[pj] - pos[pi] + pshifts) @ (torch.eye(3, dtype=pos.dtype) + strain)
                energy = energy + self.pair_part.energy(between, ids_i, ids_j, pweight)
                self.wall_active = self.wall_active or self.pair_part.core_acted
            g_pos, g_strain = torch.autograd.grad(energy, [pos, strain])
        derivative = g_strain.double().numpy()
        self.last_virial = -0.5 * (derivative + derivative.T)
        forces = np.zeros_like(positions)
        forces[self.used] = -g_pos.double().numpy()
        return forces, float(energy.detach())

    def _stale(self, positions: np.ndarray, ids, nlocal: int, cell, periodic) -> bool:
        if self._ids is None or self.nlocal != nlocal or not np.array_equal(self._ids, ids):
            return True
        if periodic != self.periodic or (any(periodic) and not np.array_equal(cell, self.cell)):
            return True
        moved = positions - self.reference
        return float(np.einsum("ij,ij->i", moved, moved).max(initial=0.0)) > (0.5 * self.skin) ** 2

    def _build(self, positions: np.ndarray, ids: np.ndarray, nlocal: int, cell, periodic) -> None:
        """The pairs that the local atoms' share depends on, each once, with their shifts (periodic
        directions), bond classes (by atom id) and shares (half per local end); the atoms they join
        (`used`, local atoms first), with the per-atom terms of the ghosts switched off."""
        kept = _one_copy(positions, ids, nlocal, periodic)
        i, j, shifts, distances = self._pairs_needed(positions[kept], nlocal, cell, periodic)
        if self.pair_part is not None:  # its nequip sees the pairs within a molecule only
            classes = self.builder.edge_classes(ids[kept][i], ids[kept][j], distances, nearest_only=False)
            inside = model_class_ids(classes, self.model.n_edge_classes) != NONBONDED
            i, j, shifts, distances = i[inside], j[inside], shifts[inside], distances[inside]
            pi, pj, pshifts, special = self._pair_part_pairs(positions[kept], ids[kept], nlocal, cell, periodic)
        else:
            pi = pj = np.zeros(0, dtype=np.int64)
        used = np.union1d(np.arange(nlocal), np.concatenate([i, j, pi, pj]))  # sorted: the local atoms come first
        renumber = np.full(len(kept), -1, dtype=np.int64)
        renumber[used] = np.arange(len(used))
        self.used = kept[used]
        ids_used, local = ids[self.used], np.arange(len(used)) < nlocal
        i, j = renumber[i], renumber[j]
        classes = self.builder.edge_classes(ids_used[i], ids_used[j], distances, nearest_only=False)
        self.i, self.j, self.pair_class = torch.from_numpy(i), torch.from_numpy(j), torch.from_numpy(classes)
        self.shift_vectors = torch.from_numpy(shifts @ cell).to(self.dtype)
        self.weight = torch.from_numpy(0.5 * (local[i].astype(np.float64) + local[j])).to(self.dtype)
        if self.pair_part is not None:
            pi, pj = renumber[pi], renumber[pj]
            share = 0.5 * (local[pi].astype(np.float64) + local[pj])
            weight = torch.from_numpy(share if special is None else share * special).to(self.dtype)
            self.pair_pairs = (torch.from_numpy(pi), torch.from_numpy(pj), torch.from_numpy(pshifts @ cell).to(self.dtype),
                               weight, torch.from_numpy(ids_used[pi]), torch.from_numpy(ids_used[pj]))  # fmt: skip
        index = torch.from_numpy(ids_used)
        atoms = {key: value.index_select(0, index) for key, value in self.atoms.items() if value.dim() > 0}
        mask = torch.from_numpy(local).to(self.dtype)
        atoms["scale"] = atoms["scale"] * mask  # ghosts' own terms belong to the ranks that own them
        atoms["shift"] = (atoms.pop("shifts") * mask).sum()
        self.node_atoms = atoms
        walls = self.engine.walls_within_reach(atoms, self.i, self.j, self.pair_class, torch.from_numpy(distances),
                                               self.skin + 1e-3)  # fmt: skip
        self.walls = None
        if walls is not None:
            w, core, stretch = walls
            self.walls = (self.i[w], self.j[w], self.shift_vectors[w], self.weight[w], core.to(self.dtype),
                          stretch.to(self.dtype))  # fmt: skip
        self._ids, self.nlocal, self.reference = ids.copy(), nlocal, positions.copy()
        self.cell, self.periodic = cell.copy(), periodic
        self.rebuilds += 1
        # what a rank computes on: local atoms, ghosts LAMMPS holds, ghosts the share needs, pairs
        self.sizes = {"local": nlocal, "ghosts": len(ids) - nlocal, "ghosts_used": len(used) - nlocal,
                      "pairs": len(i), "periodic": list(periodic)}  # fmt: skip

    def _pairs_needed(self, positions: np.ndarray, nlocal: int, cell, periodic):
        """(i, j, integer shifts, distance) of the pairs within cutoff + skin that reach the local atoms'
        share: messages of layer k matter only for atoms within L - k hops of a local atom, so a pair
        matters only if one of its atoms is within L - 1 hops (more distant ghosts are left out)."""
        from vesin import NeighborList

        i, j, shifts, distances = NeighborList(cutoff=self.cutoff + self.skin, full_list=False).compute(
            points=positions, box=cell, periodic=list(periodic), quantities="ijSd"
        )
        i, j = i.view(np.int64), j.view(np.int64)
        inner = np.arange(len(positions)) < nlocal
        for _ in range(self.layers - 1):
            grown = inner.copy()
            grown[i[inner[j]]] = True
            grown[j[inner[i]]] = True
            inner = grown
        keep = inner[i] | inner[j]
        return i[keep], j[keep], shifts[keep].astype(np.float64), distances[keep]

    def _pair_part_pairs(self, positions: np.ndarray, ids: np.ndarray, nlocal: int, cell, periodic):
        """(i, j, integer shifts) of the pair part's pairs within its reach + skin with a local atom."""
        from vesin import NeighborList

        atoms = np.flatnonzero(np.isin(ids, self.pair_part.atoms))
        if len(atoms) == 0:
            return atoms, atoms, np.zeros((0, 3)), None
        i, j, shifts, distances = NeighborList(cutoff=self.pair_part.reach + self.skin, full_list=False).compute(
            points=positions[atoms], box=cell, periodic=list(periodic), quantities="ijSd"
        )
        i, j = atoms[i.view(np.int64)], atoms[j.view(np.int64)]
        keep = (i < nlocal) | (j < nlocal)
        i, j, shifts, distances = i[keep], j[keep], shifts[keep].astype(np.float64), distances[keep]
        weights = self.pair_part.weights(ids[i], ids[j], distances)  # special_bonds', by atom id
        if weights is None:
            return i, j, shifts, None
        keep = weights > 0
        return i[keep], j[keep], shifts[keep], weights[keep]


def _one_copy(positions: np.ndarray, ids: np.ndarray, nlocal: int, periodic) -> np.ndarray:
    """Indices of the atoms to keep: every local atom, and one ghost per atom id and position along the
    non-periodic directions (LAMMPS makes an image along a direction by adding the box length there
    alone, so the images of one copy share its other coordinates exactly). With no periodic direction
    every ghost is kept."""
    if not any(periodic):
        return np.arange(len(ids))
    fixed = positions[:, [d for d in range(3) if not periodic[d]]]
    keys = np.concatenate([ids[:, None].astype(np.float64), fixed], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)  # the first copy: a local atom where there is one
    return np.sort(first)
