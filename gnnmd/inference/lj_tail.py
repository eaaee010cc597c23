"""The Lennard-Jones attraction beyond the model's cutoff, as a mean field: what a short-cutoff model
cannot see and NPT needs.

A model with a 4 A graph learns the forces of its neighbourhood; the reference's Lennard-Jones acts out
to its own cutoff (10 A for SPC/Fw). Between the two the pairs pull each other in every direction about
equally, so their forces mostly cancel, but their pressure does not: for water at 300 K it is about
-2,400 atm (measured as the model's pressure offset by `gnnmd evaluate --stress`), enough to shift an NPT
density by ~10%. With g(r) = 1 beyond the model's cutoff, as LAMMPS' `pair_modify tail yes` assumes
beyond its own, the missing energy is A / V and the missing virial (each diagonal term) B / V, with A and
B sums over type pairs of epsilon_ij and sigma_ij mixed by the reference's rule (the checkpoint's force
field's `pair_modify mix`; Lorentz-Berthelot, `arithmetic`, without one); no force."""

from __future__ import annotations

import math

import numpy as np

from gnnmd.data.forcefield import ForceField
from gnnmd.units import NKTV2P_REAL


class LennardJonesTail:
    """Mean-field Lennard-Jones energy and virial of the pairs between `inner` (the model's cutoff, A)
    and `outer` (the reference's Lennard-Jones cutoff, A; inf for an untruncated one) of a system of
    atoms with per-atom epsilon (kcal/mol) and sigma (A), unlike pairs by `mixing` (LAMMPS' rules)."""

    def __init__(self, epsilon, sigma, inner: float, outer: float, mixing: str = "arithmetic"):
        if not (0 < inner < outer):
            raise ValueError(f"the Lennard-Jones tail needs 0 < model cutoff < outer cutoff, got {inner} and {outer}")
        kinds, counts = np.unique(np.stack([np.asarray(epsilon, float), np.asarray(sigma, float)], 1), axis=0,
                                  return_counts=True)  # fmt: skip
        eps, sig = _mixed(np.clip(kinds[:, 0], 0, None), kinds[:, 1], mixing)
        pairs = counts[:, None] * counts[None, :].astype(float)
        a9, a3 = inner**-9, inner**-3
        b9, b3 = (0.0, 0.0) if math.isinf(outer) else (outer**-9, outer**-3)
        s12, s6 = sig**12, sig**6
        # integrals over [inner, outer] of r^2 u(r) and of r^3 u'(r), u = 4 eps ((s/r)^12 - (s/r)^6)
        r2u = 4 * eps * (s12 * (a9 - b9) / 9 - s6 * (a3 - b3) / 3)
        r3du = 4 * eps * (-4 / 3 * s12 * (a9 - b9) + 2 * s6 * (a3 - b3))
        self.energy_volume = float(2 * math.pi * (pairs * r2u).sum())  # A: energy = A / V (kcal/mol)
        self.virial_volume = float(-2 * math.pi / 3 * (pairs * r3du).sum())  # B: each diagonal virial = B / V
        self.inner, self.outer = float(inner), float(outer)

    def energy(self, volume: float) -> float:
        return self.energy_volume / volume

    def virial(self, volume: float) -> np.ndarray:
        """The 3x3 virial (kcal/mol): isotropic."""
        return np.eye(3) * (self.virial_volume / volume)

    def pressure_atm(self, volume: float) -> float:
        """Its pressure, for the record: virial trace / 3V in atm."""
        return self.virial_volume / volume**2 * NKTV2P_REAL


def _mixed(epsilon: np.ndarray, sigma: np.ndarray, mixing: str) -> tuple[np.ndarray, np.ndarray]:
    """(eps_ij, sigma_ij) tables of kinds by a LAMMPS mixing rule (as gnnmd.models.states.mixed)."""
    eps = np.sqrt(epsilon[:, None] * epsilon[None, :])
    if mixing == "arithmetic":
        return eps, 0.5 * (sigma[:, None] + sigma[None, :])
    if mixing == "geometric":
        return eps, np.sqrt(sigma[:, None] * sigma[None, :])
    if mixing == "sixthpower":
        s3, s6 = sigma**3, sigma[:, None] ** 6 + sigma[None, :] ** 6
        return 2 * eps * s3[:, None] * s3[None, :] / s6, (0.5 * s6) ** (1 / 6)
    raise ValueError(f"unknown mixing rule {mixing!r}")


def for_topology(topology, inner: float, outer: float, mixing: str = "arithmetic") -> LennardJonesTail:
    """The tail of a system read by gnnmd.data.reader.read_topology (node features: q, epsilon, sigma)."""
    features = np.asarray(topology.node_features, dtype=np.float64)
    return LennardJonesTail(features[:, 1], features[:, 2], inner, outer, mixing)


def for_model(info: dict, topology, outer: float) -> LennardJonesTail:
    """The tail between a checkpoint's cutoff (its `info`) and `outer`. csnequip has none to add: its pair
    part reaches pair_cutoff x sigma_ij (10.1 A for water's O-O) and learned the reference's truncation.
    Unlike pairs mix by the rule of the force field the model was trained on (its checkpoint's)."""
    if info.family == "csnequip":
        raise ValueError(
            "--lj-tail is for a model that stops at its graph's cutoff; csnequip's pair part reaches "
            "pair_cutoff x sigma_ij (10.1 A for water's O-O) and learned the reference's truncation"
        )
    mixing = ForceField.from_dict(info.force_field).mixing if info.force_field else "arithmetic"
    return for_topology(topology, float(info.cutoff), outer, mixing)
