"""The corresponding-states energy model (family "csnequip"): what a water-trained model can know about
argon, or any Lennard-Jones species, before it has seen one.

Reference minus Coulomb is, for the systems gnnmd generates, the intramolecular terms (bonds, angles)
plus Lennard-Jones between atoms with epsilon > 0. Two parts learn those:

- the molecular part: NequIP (gnnmd.models.nequip) on the edges within a molecule only (bonded and 1-3
  pairs), with its walls; an atom with no such edge (argon) gets a constant, no force;
- the pair part: for every pair of atoms of different molecules with eps_ij > 0 (Lorentz-Berthelot eps_ij,
  sigma_ij from the two atoms' own parameters), eps_ij * g(r / sigma_ij), out to r = `pair_cutoff` x
  sigma_ij (reduced units: 3.2 sigma is 10.1 A for water's O-O). g is a network of the reduced distance
  alone (a Bessel basis, an MLP, a smooth envelope at the cutoff): the principle of corresponding states
  is the only physics put in; g itself is learned from data. Its neighbour list is built from the
  positions inside the model (vesin), so graphs stay those of the molecular cutoff.

Below the shortest reduced distance x_e of the training pairs no frame says what g is, and a network
left to itself there turns over (the shipped model's g peaks at x = 0.69 and falls below it): MD then finds
a pair collapse that Coulomb attraction between other atoms of the two molecules rewards (at 370 K, an O-O
pair at 2.0 A with an H-O pair at 0.9 A). So below x_e a repulsive g (g(x_e) > 0 > g'(x_e)) is continued
as an exponential, g(x_e) exp(-k (x - x_e)) with k = -g'/g at x_e (value and slope continuous, the
Born-Mayer form of short-range repulsion, its steepness the learned curve's own at the edge); any other g
is held at g(x_e). A reduced wall adds to that below `core_margin` x x_e: core_strength ((x_c - x)
sigma_ij)^3, for any species. The pair part cannot represent three-body effects between molecules, which
classical force fields do not have."""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn.nn import FullyConnectedNet

from gnnmd.data.graphs import NONBONDED
from gnnmd.models.nequip import BesselBasis, NequIP, polynomial_envelope


class StatesNequIP(NequIP):
    """NequIP on intramolecular edges plus a learned pair function in corresponding-states units (see
    the module docstring). Hyper-parameters: NequIP's, `pair_cutoff` (reduced, x = r / sigma_ij),
    `pair_basis` (Bessel functions of x) and `pair_hidden` (MLP width)."""

    family = "csnequip"

    def __init__(self, pair_cutoff: float = 3.2, pair_basis: int = 16, pair_hidden: int = 64, **nequip):
        if pair_cutoff <= 1.0:
            raise ValueError(f"pair_cutoff is in units of sigma_ij and must exceed 1, got {pair_cutoff}")
        super().__init__(**nequip)
        self.hyper.update(pair_cutoff=float(pair_cutoff), pair_basis=int(pair_basis), pair_hidden=int(pair_hidden))
        self.pair_radial = BesselBasis(pair_cutoff, pair_basis)
        self.pair_net = FullyConnectedNet([pair_basis, pair_hidden, pair_hidden, 1], torch.nn.functional.silu)
        self.register_buffer("pair_core", torch.tensor(0.0))  # reduced wall radius (fitted); 0: none
        self.register_buffer("pair_edge", torch.tensor(0.0))  # x_e: g continued below it (fitted); 0: never

    @property
    def pair_cutoff(self) -> float:
        return float(self.hyper["pair_cutoff"])

    def atomic_energies(self, x, edge_onehot, vectors, sender, receiver) -> torch.Tensor:
        """The molecular part: NequIP on the edges of one molecule only."""
        keep = edge_onehot[:, NONBONDED] == 0
        return super().atomic_energies(x, edge_onehot[keep], vectors[keep], sender[keep], receiver[keep])

    def pair_network(self, reduced: torch.Tensor) -> torch.Tensor:
        """The network's g(x), in units of eps_ij, at reduced distances x."""
        envelope = polynomial_envelope(reduced, self.pair_cutoff, self.envelope_p)
        return self.pair_net(self.pair_radial(reduced)).squeeze(-1) * envelope

    def pair_function(self, reduced: torch.Tensor) -> torch.Tensor:
        """g(x): the network's, continued below the data's shortest x_e (see the module docstring)."""
        g = self.pair_network(reduced)
        edge = float(self.pair_edge)
        below = reduced < edge
        if edge <= 0 or not bool(below.any()):
            return g
        value, slope = self._edge_terms(edge, reduced.dtype)
        if float(value.detach()) > 0 and float(slope.detach()) < 0:
            continued = value * torch.exp((slope / value) * (reduced - edge))
        else:
            continued = value.expand_as(reduced)
        return torch.where(below, continued, g)

    def _edge_terms(self, edge: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """g(x_e) and g'(x_e), differentiable in the parameters when grad is on."""
        track = torch.is_grad_enabled()
        with torch.enable_grad():
            x = torch.tensor([edge], dtype=dtype, device=self.pair_edge.device, requires_grad=True)
            value = self.pair_network(x)
            (slope,) = torch.autograd.grad(value.sum(), x, create_graph=track)
        return (value[0], slope[0]) if track else (value[0].detach(), slope[0].detach())

    def pair_energies(self, batch, pos: torch.Tensor, cell: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        """Per-atom energies of the pair part (half of each pair on either atom)."""
        x = batch.x.to(pos.dtype)
        energies = torch.zeros(len(pos), dtype=pos.dtype, device=pos.device)
        for i, j, shifts in _pairs_of_graphs(x, pos, cell, graph, self.pair_cutoff):
            sigma = 0.5 * (x[i, 2] + x[j, 2])
            epsilon = torch.sqrt(x[i, 1] * x[j, 1])
            r = torch.linalg.vector_norm(pos[j] - pos[i] + shifts, dim=1)
            reduced = r / sigma
            pair = epsilon * self.pair_function(reduced)
            if float(self.pair_core) > 0:  # reduced wall, absolute stiffness
                pair = pair + reduced_wall(float(self.pair_core), self.core_strength, reduced, sigma)
            energies = energies.index_add(0, i, 0.5 * pair).index_add(0, j, 0.5 * pair)
        return energies

    def fit_priors(self, frames, coulomb=None, indices=None) -> dict:
        """NequIP's priors, the edge x_e of the data (the shortest reduced distance of a pair of the pair
        part in the training frames, or the parent's if shorter) and the reduced wall at core_margin x x_e."""
        _check_no_intramolecular_pairs(frames.topology)
        fitted = super().fit_priors(frames, coulomb, indices)
        sample = frames if indices is None else frames.subset(indices)
        shortest = shortest_reduced_distance(sample, self.pair_cutoff)
        if float(self.pair_edge) > 0:  # fine-tuning: g was learned down to the parent's edge, whatever the new data
            shortest = min(shortest, float(self.pair_edge))
        if math.isfinite(shortest):
            self.pair_core.fill_(self.core_margin * shortest)
            self.pair_edge.fill_(shortest)
        fitted["shortest_reduced_distance"] = shortest
        return fitted

    def fit_walls(self, frames, strength: float | None = None, margin: float | None = None) -> dict:
        """NequIP's walls, and the reduced wall moved with the margin (its edge x_e stays)."""
        fitted = super().fit_walls(frames, strength, margin)
        self.pair_core.fill_(self.core_margin * float(self.pair_edge))
        return fitted

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Checkpoints from before the continuation get it at the data's edge, which their wall records."""
        state = dict(state_dict)
        if "pair_edge" not in state:
            core = state.get("pair_core", torch.tensor(0.0))
            state["pair_edge"] = core / self.core_margin if float(core) > 0 else torch.zeros_like(core)
        return super().load_state_dict(state, strict, **kwargs)


def reduced_wall(core: float, strength: float, reduced: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per pair: strength ((x_c - x) sigma_ij)^3 below the reduced core radius x_c, else 0."""
    return strength * (torch.clamp(core - reduced, min=0.0) * sigma) ** 3


def _pairs_of_graphs(x, pos, cell, graph, pair_cutoff: float):
    """Per graph of a batch: (i, j, shift vectors) of the pairs of atoms with epsilon > 0 closer than
    pair_cutoff x sigma_ij (a list built with the largest sigma_ij, then trimmed), each pair once (one
    such atom per molecule: _check_no_intramolecular_pairs). Indices are into the batch."""
    from vesin_torch import NeighborList

    for g in range(cell.shape[0]):
        atoms = torch.nonzero((graph == g) & (x[:, 1] > 0)).squeeze(1)
        if len(atoms) < 1:
            continue
        reach = pair_cutoff * float(x[atoms, 2].max())
        points = pos[atoms].detach().double()
        i, j, shifts = NeighborList(cutoff=reach, full_list=False).compute(
            points=points, box=cell[g].detach().double(), periodic=True, quantities="ijS"
        )
        i, j = atoms[i], atoms[j]
        shift_vectors = shifts.to(pos.dtype) @ cell[g]
        sigma = 0.5 * (x[i, 2] + x[j, 2])
        r = torch.linalg.vector_norm(pos[j].detach() - pos[i].detach() + shift_vectors.detach(), dim=1)
        keep = r < pair_cutoff * sigma
        yield i[keep], j[keep], shift_vectors[keep]


def _check_no_intramolecular_pairs(topology) -> None:
    """The pair part is for atoms of different molecules: a molecule with two atoms of epsilon > 0 would
    need the force field's exclusions, which it does not model."""
    epsilon, molecules = np.asarray(topology.node_features)[:, 1], np.asarray(topology.molecules)
    counts = np.bincount(molecules[(epsilon > 0) & (molecules > 0)])  # molecule 0: none (LAMMPS)
    if len(counts) and counts.max() > 1:
        raise ValueError(
            "the corresponding-states model (csnequip) needs at most one atom with epsilon > 0 per molecule; "
            f"this system has molecules with {int(counts.max())}"
        )


@torch.no_grad()
def shortest_reduced_distance(frames, pair_cutoff: float, max_frames: int = 50) -> float:
    """The shortest r / sigma_ij of any pair with eps_ij > 0 in (up to max_frames of) the frames."""
    x = torch.as_tensor(frames.topology.node_features, dtype=torch.float64)
    best = math.inf
    for k in np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int)):
        pos = torch.as_tensor(frames.positions[k], dtype=torch.float64)
        cell = torch.as_tensor(frames.cells[k], dtype=torch.float64)[None]
        graph = torch.zeros(len(pos), dtype=torch.long)
        for i, j, shifts in _pairs_of_graphs(x, pos, cell, graph, pair_cutoff):
            if len(i):
                r = torch.linalg.vector_norm(pos[j] - pos[i] + shifts, dim=1)
                best = min(best, float((r / (0.5 * (x[i, 2] + x[j, 2]))).min()))
    return best
