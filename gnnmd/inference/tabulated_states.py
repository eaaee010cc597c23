"""The pair part of the corresponding-states model (csnequip, gnnmd.models.states) for inference: its
learned g(x) of the reduced distance tabulated as a cubic Hermite spline, evaluated on a neighbour list of
its own (the atoms with epsilon > 0), so that MD pays a table lookup per pair instead of an MLP. Its
molecular part is a NequIP on the pairs within one molecule and runs as TabulatedNequIP; with both,
csnequip has the tabulated engine's speed and virial (NPT). Never used in training; nothing is saved."""

from __future__ import annotations

import copy

import numpy as np
import torch

from gnnmd.models.layers import RadialTable
from gnnmd.models.states import reduced_wall


class TabulatedPairPart:
    """eps_ij g(r / sigma_ij) (+ the reduced wall) summed over pairs of atoms with epsilon > 0, with g
    tabulated on [0, pair_cutoff] in `intervals` intervals (zero beyond, where g's envelope vanishes).
    `atoms`: their numbers in the system, for the neighbour list; `reach`: the list's cutoff (A), the
    pair cutoff of the widest sigma_ij. Gives the energy and its first derivatives only (forces, virial)."""

    def __init__(self, model, node_features: np.ndarray, intervals: int = 4096):
        dtype = model.type_scale.dtype
        network = copy.deepcopy(model).double()
        self.table = RadialTable(lambda x, _: network.pair_function(x)[:, None], 1, model.pair_cutoff, intervals, dtype)
        features = torch.as_tensor(np.asarray(node_features), dtype=dtype)
        self.epsilon, self.sigma = features[:, 1], features[:, 2]
        self.atoms = np.flatnonzero(np.asarray(node_features)[:, 1] > 0)
        self.reach = model.pair_cutoff * float(self.sigma[self.atoms].max()) if len(self.atoms) else 0.0
        self.core, self.core_strength = float(model.pair_core), model.core_strength
        self.core_acted = False

    def to(self, device) -> TabulatedPairPart:
        self.table.coefficients = self.table.coefficients.to(device)
        self.epsilon, self.sigma = self.epsilon.to(device), self.sigma.to(device)
        return self

    def energy(self, vectors: torch.Tensor, i: torch.Tensor, j: torch.Tensor, weight=None) -> torch.Tensor:
        """Total energy (kcal/mol) of the pairs (i, j) with vectors r_j - r_i (+ shift); each pair's times
        its `weight` if given. Differentiable once in `vectors`."""
        r = torch.linalg.vector_norm(vectors, dim=1)
        sigma = 0.5 * (self.sigma[i] + self.sigma[j])
        reduced = r / sigma
        with torch.no_grad():
            row, t = self.table.locate(reduced, torch.zeros_like(i))
            value, slope = (reduced.new_empty(len(r), 1) for _ in range(2))
            self.table.lookup(row, t, out=(value, slope))
        # the spline's value, and its exact slope for the gradient (first derivatives only)
        g = value[:, 0] + (reduced - reduced.detach()) * (slope[:, 0] / self.table.step)
        pair = torch.sqrt(self.epsilon[i] * self.epsilon[j]) * g
        self.core_acted = False  # whether the reduced wall acted on a pair in this call
        if self.core > 0:  # the model's reduced wall
            self.core_acted = bool((reduced.detach() < self.core).any())
            pair = pair + reduced_wall(self.core, self.core_strength, reduced, sigma)
        return pair.sum() if weight is None else pair @ weight
