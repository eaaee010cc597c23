"""The pair part of the corresponding-states model (csnequip, gnnmd.models.states) for inference: its
learned g(x) of the reduced distance tabulated as a cubic Hermite spline, evaluated on a neighbour list of
its own (the atoms with epsilon > 0), so that MD pays a table lookup per pair instead of an MLP. Its
molecular part is a NequIP on the pairs within one molecule and runs as TabulatedNequIP; with both,
csnequip has the tabulated engine's speed and virial (NPT). Never used in training; nothing is saved.

The pairs, their eps_ij and sigma_ij (the model's mixing rule) and special_bonds weights are the model's
own (gnnmd.models.states: special_weights, from the system's topology here, where the model's forward
finds them from the graph's bonds)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from gnnmd.data.topology import special_neighbours
from gnnmd.models.layers import RadialTable
from gnnmd.models.states import mixed, reduced_wall, special_weights


class TabulatedPairPart:
    """w_ij eps_ij g(r / sigma_ij) (+ the reduced wall) summed over pairs of atoms with epsilon > 0, with g
    tabulated on [0, pair_cutoff] in `intervals` intervals (zero beyond, where g's envelope vanishes).
    `atoms`: their numbers in the system, for the neighbour list; `reach`: the list's cutoff (A), the
    pair cutoff of the widest sigma_ij. Gives the energy and its first derivatives only (forces, virial)."""

    def __init__(self, model, topology, intervals: int = 4096):
        dtype = model.type_scale.dtype
        network = copy.deepcopy(model).double()
        self.table = RadialTable(lambda x, _: network.pair_function(x)[:, None], 1, model.pair_cutoff, intervals, dtype)
        node_features = np.asarray(topology.node_features)
        features = torch.as_tensor(node_features, dtype=dtype)
        self.epsilon, self.sigma = features[:, 1], features[:, 2]
        self.atoms = np.flatnonzero(node_features[:, 1] > 0)
        self.reach = model.pair_cutoff * float(self.sigma[self.atoms].max()) if len(self.atoms) else 0.0
        self.core, self.core_strength = float(model.pair_core), model.core_strength
        self.mixing, self.special_lj = model.mixing, model.special_lj
        self.special = None if self.special_lj is None else special_neighbours(topology)
        self.n_atoms = len(node_features)
        self.core_acted = False

    def to(self, device) -> TabulatedPairPart:
        self.table.coefficients = self.table.coefficients.to(device)
        self.epsilon, self.sigma = self.epsilon.to(device), self.sigma.to(device)
        return self

    def weights(self, i, j, distances) -> np.ndarray | None:
        """The special_bonds weight of each pair (i, j) of atom numbers at `distances` (a list's pairs,
        every image within its reach); None for a model without them (every pair counts in full)."""
        if self.special is None:
            return None
        return special_weights(i, j, distances, self.special, self.n_atoms, self.special_lj)

    def listed(self, pair_list) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(numbers of the pairs of a built VerletList that count, their weights): (None, None) for a
        model without special_bonds weights (every pair, in full)."""
        weights = self.weights(pair_list.i.cpu().numpy(), pair_list.j.cpu().numpy(), pair_list.distances)
        if weights is None:
            return None, None
        kept = np.flatnonzero(weights > 0)
        device = pair_list.i.device
        return torch.from_numpy(kept).to(device), torch.from_numpy(weights[kept]).to(device, self.epsilon.dtype)

    def energy(self, vectors: torch.Tensor, i: torch.Tensor, j: torch.Tensor, weight=None) -> torch.Tensor:
        """Total energy (kcal/mol) of the pairs (i, j) with vectors r_j - r_i (+ shift); each pair's times
        its `weight` if given. Differentiable once in `vectors`."""
        r = torch.linalg.vector_norm(vectors, dim=1)
        epsilon, sigma = mixed(self.epsilon[i], self.epsilon[j], self.sigma[i], self.sigma[j], self.mixing)
        reduced = r / sigma
        with torch.no_grad():
            row, t = self.table.locate(reduced, torch.zeros_like(i))
            value, slope = (reduced.new_empty(len(r), 1) for _ in range(2))
            self.table.lookup(row, t, out=(value, slope))
        # the spline's value, and its exact slope for the gradient (first derivatives only)
        g = value[:, 0] + (reduced - reduced.detach()) * (slope[:, 0] / self.table.step)
        pair = epsilon * g
        self.core_acted = False  # whether the reduced wall acted on a pair in this call
        if self.core > 0:  # the model's reduced wall
            self.core_acted = bool((reduced.detach() < self.core).any())
            pair = pair + reduced_wall(self.core, self.core_strength, reduced, sigma)
        return pair.sum() if weight is None else pair @ weight
