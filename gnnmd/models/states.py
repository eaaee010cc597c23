"""The corresponding-states energy model (family "csnequip"): what a water-trained model can know about
argon, or any Lennard-Jones species, before it has seen one.

Reference minus Coulomb is the intramolecular terms (bonds, angles, dihedrals) plus Lennard-Jones between
atoms with epsilon > 0, weighted as the reference's special_bonds says. Two parts learn those:

- the molecular part: NequIP (gnnmd.models.nequip) on the edges within a molecule only (1-2, 1-3 and, for
  a model with the 1-4 class, 1-4 pairs), with its walls; an atom with no such edge (argon) gets a
  constant, no force;
- the pair part: w_ij eps_ij g(r / sigma_ij) for every pair of atoms with eps_ij > 0, out to r =
  `pair_cutoff` x sigma_ij (reduced units: 3.2 sigma is 10.1 A for water's O-O). eps_ij and sigma_ij come
  from the two atoms' own parameters by the reference's mixing rule (hyper `mixing`); w_ij is the
  reference's special_bonds LJ weight of a 1-2, 1-3 or 1-4 pair (hyper `special_lj`, three weights, e.g.
  0 0 0.5 for OPLS; pairs of weight 0 are left out) and 1 for any other pair, of another molecule or four
  and more bonds apart in the same one. The special pairs are found as LAMMPS finds them, from the bonds
  alone (one, two, three bonds apart, nearest image). A model without `special_lj` (made before it, or
  from data that name no force field) is the original form: Lorentz-Berthelot, and at most one atom with
  epsilon > 0 per molecule, so every pair is one of different molecules. g is a network of the reduced
  distance alone (a Bessel basis, an MLP, a smooth envelope at the cutoff): the principle of corresponding
  states is the only physics put in; g itself is learned from data. Its neighbour list is built from the
  positions inside the model (vesin), and the special pairs from the graph's bond edges, so graphs stay
  those of the molecular cutoff.

Below the shortest reduced distance x_e of the training pairs no frame says what g is, and a network
left to itself there turns over (the shipped model's g peaks at x = 0.69 and falls below it): MD then finds
a pair collapse that Coulomb attraction between other atoms of the two molecules rewards (at 370 K, an O-O
pair at 2.0 A with an H-O pair at 0.9 A). So below x_e a repulsive g (g(x_e) > 0 > g'(x_e)) is continued
as an exponential, g(x_e) exp(-k (x - x_e)) with k = -g'/g at x_e (value and slope continuous, the
Born-Mayer form of short-range repulsion, its steepness the learned curve's own at the edge); any other g
is held at g(x_e). A reduced wall adds to that below `core_margin` x x_e: core_strength ((x_c - x)
sigma_ij)^3, for any species (a pair's whole term, g and wall, is weighted by w_ij; x_e is over pairs
of weight > 0). The pair part cannot represent three-body effects between molecules, which
classical force fields do not have."""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn.nn import FullyConnectedNet

from gnnmd.data.graphs import BOND, NONBONDED
from gnnmd.data.topology import special_neighbours
from gnnmd.models.nequip import BesselBasis, NequIP, polynomial_envelope

# the reference's rules for eps_ij, sigma_ij of unlike atoms (LAMMPS' pair_modify mix); arithmetic is
# Lorentz-Berthelot, the original form's
MIXING_RULES = ("arithmetic", "geometric", "sixthpower")


class StatesNequIP(NequIP):
    """NequIP on intramolecular edges plus a learned pair function in corresponding-states units (see
    the module docstring). Hyper-parameters: NequIP's, `pair_cutoff` (reduced, x = r / sigma_ij),
    `pair_basis` (Bessel functions of x), `pair_hidden` (MLP width), `mixing` (MIXING_RULES) and
    `special_lj` (the LJ weights of 1-2, 1-3, 1-4 pairs; None: the original form, no pair of one molecule)."""

    family = "csnequip"

    def __init__(self, pair_cutoff: float = 3.2, pair_basis: int = 16, pair_hidden: int = 64,
                 mixing: str = "arithmetic", special_lj=None, **nequip):  # fmt: skip
        if pair_cutoff <= 1.0:
            raise ValueError(f"pair_cutoff is in units of sigma_ij and must exceed 1, got {pair_cutoff}")
        if mixing not in MIXING_RULES:
            raise ValueError(f"mixing must be one of {', '.join(MIXING_RULES)}, got {mixing!r}")
        if special_lj is not None:
            special_lj = [float(w) for w in special_lj]
            if len(special_lj) != 3 or not all(0.0 <= w <= 1.0 for w in special_lj):
                raise ValueError(f"special_lj needs three weights in [0, 1] (1-2, 1-3, 1-4), got {special_lj}")
        super().__init__(**nequip)
        self.hyper.update(pair_cutoff=float(pair_cutoff), pair_basis=int(pair_basis), pair_hidden=int(pair_hidden),
                          mixing=mixing, special_lj=special_lj)  # fmt: skip
        self.pair_radial = BesselBasis(pair_cutoff, pair_basis)
        self.pair_net = FullyConnectedNet([pair_basis, pair_hidden, pair_hidden, 1], torch.nn.functional.silu)
        self.register_buffer("pair_core", torch.tensor(0.0))  # reduced wall radius (fitted); 0: none
        self.register_buffer("pair_edge", torch.tensor(0.0))  # x_e: g continued below it (fitted); 0: never

    @property
    def pair_cutoff(self) -> float:
        return float(self.hyper["pair_cutoff"])

    @property
    def mixing(self) -> str:
        return self.hyper.get("mixing", "arithmetic")

    @property
    def special_lj(self) -> tuple[float, float, float] | None:
        """The LJ weights of 1-2, 1-3 and 1-4 pairs; None: the original form (no pair within a molecule)."""
        weights = self.hyper.get("special_lj")
        return None if weights is None else tuple(float(w) for w in weights)

    def follow_force_field(self, force_field, topology=None) -> None:
        """Take the mixing rule and special_bonds LJ weights of a reference force field
        (gnnmd.data.forcefield.ForceField): the bookkeeping of the pairs the data's forces come from.
        csnequip finds 1-3 and 1-4 pairs from the bonds alone (LAMMPS' `angle no dihedral no`): `angle yes`
        is the same where every such 1-3 pair of `topology` ends a listed angle (SPC/Fw's H-H), and is
        refused where one does not; `dihedral yes` is refused unless 1-4 pairs are weighted 1 anyway."""
        from gnnmd.data.topology import special_neighbours

        special = force_field.special_bonds
        unlisted = topology is not None and len(special_neighbours(topology)[1]) != len(
            special_neighbours(topology, angle=True)[1]
        )
        if (special.angle and (topology is None or unlisted)) or (special.dihedral and special.lj[2] != 1.0):
            raise ValueError(
                f"{force_field.source}: special_bonds with angle/dihedral yes, and pairs two or three bonds apart "
                "that no listed angle/dihedral ends; csnequip weights pairs by bond count alone (angle no dihedral no)"
            )
        self.hyper.update(mixing=force_field.mixing, special_lj=[float(w) for w in special.lj])

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
        special = None if self.special_lj is None else special_pairs_of_batch(batch)
        for i, j, shifts in _pairs_of_graphs(x, pos, cell, graph, self.pair_cutoff, self.mixing):
            r = torch.linalg.vector_norm(pos[j] - pos[i] + shifts, dim=1)
            weight = None
            if special is not None:
                weight = special_weights(i, j, r.detach(), special, len(pos), self.special_lj)
                keep = torch.from_numpy(weight > 0).to(i.device)
                i, j, r = i[keep], j[keep], r[keep]
                weight = torch.from_numpy(weight[weight > 0]).to(pos.device, pos.dtype)
            epsilon, sigma = mixed(x[i, 1], x[j, 1], x[i, 2], x[j, 2], self.mixing)
            reduced = r / sigma
            pair = epsilon * self.pair_function(reduced)
            if float(self.pair_core) > 0:  # reduced wall, absolute stiffness
                pair = pair + reduced_wall(float(self.pair_core), self.core_strength, reduced, sigma)
            if weight is not None:
                pair = pair * weight
            energies = energies.index_add(0, i, 0.5 * pair).index_add(0, j, 0.5 * pair)
        return energies

    def check_system(self, topology, where: str = "") -> None:
        if self.special_lj is None:
            try:
                _check_no_intramolecular_pairs(topology)
            except ValueError as err:
                raise ValueError(f"{where}{err}") from None

    def fit_priors(self, frames, coulomb=None, indices=None) -> dict:
        """NequIP's priors, the edge x_e of the data (the shortest reduced distance of a pair of the pair
        part in the training frames, or the parent's if shorter) and the reduced wall at core_margin x x_e."""
        if self.special_lj is None:
            _check_no_intramolecular_pairs(frames.topology)
        else:
            _check_bonds_in_graph(frames, self.cutoff)
        fitted = super().fit_priors(frames, coulomb, indices)
        sample = frames if indices is None else frames.subset(indices)
        shortest = shortest_reduced_distance(sample, self.pair_cutoff, self.mixing, self.special_lj)
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


def mixed(eps_i, eps_j, sigma_i, sigma_j, rule: str = "arithmetic"):
    """(eps_ij, sigma_ij) of pairs by a mixing rule (LAMMPS' pair_modify mix): arithmetic (Lorentz-Berthelot)
    sqrt(eps_i eps_j) and the mean sigma; geometric sqrt of both; sixthpower LAMMPS' formulas."""
    if rule == "arithmetic":
        return torch.sqrt(eps_i * eps_j), 0.5 * (sigma_i + sigma_j)
    if rule == "geometric":
        return torch.sqrt(eps_i * eps_j), torch.sqrt(sigma_i * sigma_j)
    if rule == "sixthpower":
        s6 = sigma_i**6 + sigma_j**6
        return 2 * torch.sqrt(eps_i * eps_j) * sigma_i**3 * sigma_j**3 / s6, (0.5 * s6) ** (1 / 6)
    raise ValueError(f"mixing must be one of {', '.join(MIXING_RULES)}, got {rule!r}")


def special_pairs_of_batch(batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 1-2, 1-3 and 1-4 pairs of a batch of graphs (special_neighbours), from its bond edges: the model
    has no topology, but every bond is an edge of the graph (_check_bonds_in_graph)."""
    from types import SimpleNamespace

    bonds = batch.edge_attr[:, BOND] > 0.5
    pairs = torch.stack([batch.edge_index[1][bonds], batch.edge_index[0][bonds]], dim=1).cpu().numpy()
    return special_neighbours(SimpleNamespace(n_atoms=int(batch.x.shape[0]), bonds=pairs, angles=None))


def special_weights(i, j, distances, special, n_atoms: int, weights) -> np.ndarray:
    """Per pair (i, j) at `distances`: the special_bonds weight of its level if its atoms are 1-2, 1-3 or
    1-4 (`special`: special_neighbours' three arrays), applied to the nearest image among the listed
    copies of the pair only (as the graph's bond classes); 1 for every other pair. Numpy or torch in."""
    i, j, distances = (np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for v in (i, j, distances))
    keys = np.minimum(i, j).astype(np.int64) * n_atoms + np.maximum(i, j)
    out = np.ones(len(keys))
    for level, weight in zip(special, weights):
        hit = np.flatnonzero(np.isin(keys, level[:, 0] * n_atoms + level[:, 1]))
        order = hit[np.lexsort((distances[hit], keys[hit]))]
        _, first = np.unique(keys[order], return_index=True)
        out[order[first]] = weight
    return out


def reduced_wall(core: float, strength: float, reduced: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per pair: strength ((x_c - x) sigma_ij)^3 below the reduced core radius x_c, else 0."""
    return strength * (torch.clamp(core - reduced, min=0.0) * sigma) ** 3


def _pairs_of_graphs(x, pos, cell, graph, pair_cutoff: float, mixing: str = "arithmetic"):
    """Per graph of a batch: (i, j, shift vectors) of the pairs of atoms with epsilon > 0 closer than
    pair_cutoff x sigma_ij (a list built with the largest sigma, then trimmed), each pair once, those of
    one molecule among them (special_weights sorts them out). Indices are into the batch."""
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
        sigma = mixed(x[i, 1], x[j, 1], x[i, 2], x[j, 2], mixing)[1]
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
            "this corresponding-states model (csnequip) has no special_bonds weights, so it needs at most one "
            f"atom with epsilon > 0 per molecule; this system has molecules with {int(counts.max())} (train it "
            "from a dataset whose manifest names its reference force field, which gives the weights)"
        )


def _check_bonds_in_graph(frames, cutoff: float, max_frames: int = 10) -> None:
    """The model finds the 1-2, 1-3 and 1-4 pairs from the graph's bond edges: every bond must be shorter
    than its cutoff."""
    bonds = np.asarray(frames.topology.bonds, dtype=np.int64).reshape(-1, 2)
    if len(bonds) == 0:
        return
    for k in np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int)):
        between = frames.positions[k][bonds[:, 1]] - frames.positions[k][bonds[:, 0]]
        cell = np.asarray(frames.cells[k], dtype=np.float64)
        fractional = between @ np.linalg.inv(cell)
        length = float(np.linalg.norm((fractional - np.round(fractional)) @ cell, axis=1).max())
        if length >= cutoff:
            raise ValueError(
                f"frame {k} has a bond of {length:.2f} A, longer than the model's cutoff {cutoff} A: csnequip "
                "finds the special_bonds pairs from the graph's bonds; raise the cutoff"
            )


@torch.no_grad()
def shortest_reduced_distance(frames, pair_cutoff: float, mixing: str = "arithmetic", special_lj=None,
                              max_frames: int = 50) -> float:  # fmt: skip
    """The shortest r / sigma_ij of any pair of the pair part (eps_ij > 0, weight > 0) in (up to
    max_frames of) the frames."""
    x = torch.as_tensor(frames.topology.node_features, dtype=torch.float64)
    special = None if special_lj is None else special_neighbours(frames.topology)
    best = math.inf
    for k in np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int)):
        pos = torch.as_tensor(frames.positions[k], dtype=torch.float64)
        cell = torch.as_tensor(frames.cells[k], dtype=torch.float64)[None]
        graph = torch.zeros(len(pos), dtype=torch.long)
        for i, j, shifts in _pairs_of_graphs(x, pos, cell, graph, pair_cutoff, mixing):
            r = torch.linalg.vector_norm(pos[j] - pos[i] + shifts, dim=1)
            if special is not None:
                keep = torch.from_numpy(special_weights(i, j, r, special, len(pos), special_lj) > 0)
                i, j, r = i[keep], j[keep], r[keep]
            if len(i):
                best = min(best, float((r / mixed(x[i, 1], x[j, 1], x[i, 2], x[j, 2], mixing)[1]).min()))
    return best
