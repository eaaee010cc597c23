"""A committee of models of one system: their mean force drives MD, and how much they disagree (the force
deviation) says where the models are guessing. Members trained alike on the same data agree where the
data was; away from it each extrapolates its own way.

The deviation of atom i is sqrt(mean_k |F_k,i - mean_k F_k,i|^2) (kcal/mol/A), as DeePMD-kit defines it;
a frame's is the largest over its atoms. `deviation_quality` measures how well it ranks the true errors."""

from __future__ import annotations

import numpy as np

from gnnmd.inference.forces import ModelForces, with_coulomb


def force_deviation(forces: np.ndarray) -> np.ndarray:
    """Per-atom deviation (N,) of the members' forces (K, N, 3): the RMS distance to their mean force."""
    forces = np.asarray(forces, dtype=np.float64)
    spread = forces - forces.mean(axis=0, keepdims=True)
    return np.sqrt((spread**2).sum(axis=2).mean(axis=0))


def _same_settings(members: list[ModelForces], checkpoints: list) -> None:
    """Members must describe the same physics outside the learned part: the same Coulomb treatment."""
    first = members[0].info.get("electrostatics")
    for member, path in zip(members[1:], checkpoints[1:]):
        if member.info.get("electrostatics") != first:
            raise ValueError(
                f"{path}: the committee's models must be trained with the same Coulomb settings, but it has "
                f"{member.info.get('electrostatics')} and {checkpoints[0]} has {first}"
            )


class CommitteeForces:
    """Several checkpoints as one force function (like ModelForces): the members' mean forces and energy;
    `last_deviation` holds the per-atom force deviation of the last call. The PME Coulomb part, the same
    for every member, is computed once (with `electrostatics`)."""

    def __init__(self, checkpoints, topology, system: str = "system", allow_unknown_types: bool = False,
                 electrostatics: bool = True):  # fmt: skip
        if len(checkpoints) < 2:
            raise ValueError(f"a committee needs at least two models, got {len(checkpoints)}")
        self.members = [
            ModelForces(path, topology, system, allow_unknown_types, electrostatics=False) for path in checkpoints
        ]
        _same_settings(self.members, list(checkpoints))
        self.info = self.members[0].info
        self.topology = topology
        self.electrostatics = self.info.get("electrostatics") if electrostatics else None
        self.coulomb = None
        self.last_deviation: np.ndarray | None = None

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, float | None]:
        results = [member(positions, cell) for member in self.members]
        forces = np.stack([f for f, _ in results])
        self.last_deviation = force_deviation(forces)
        mean = forces.mean(axis=0)
        energies = [e for _, e in results]
        energy = None if any(e is None for e in energies) else float(np.mean(energies))
        if self.electrostatics is not None:
            mean, energy = self._add_coulomb(positions, cell, mean, energy)
        return mean, energy

    def _add_coulomb(self, positions, cell, forces, energy):
        import torch

        if self.coulomb is None:
            self.coulomb = with_coulomb(self.members[0].model, self.electrostatics, self.topology, cell)
        if not hasattr(self.coulomb, "electrostatics"):  # a system without charges
            return forces, energy
        e, f = self.coulomb.electrostatics(torch.from_numpy(np.asarray(positions, dtype=np.float64)),
                                           torch.from_numpy(np.asarray(cell, dtype=np.float64)))  # fmt: skip
        return forces + f.numpy(), None if energy is None else energy + float(e)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 (ties broken by order; the values here are continuous)."""
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two samples."""
    ra, rb = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def deviation_quality(deviation: np.ndarray, error: np.ndarray, threshold: float | None = None) -> dict:
    """How well a committee's deviation predicts its true error, per atom (or per frame): the rank
    correlation, and the mean error of the atoms above and below `threshold` (default: the deviation's
    90th percentile), with how many there are. `error`: |mean force - reference| per atom."""
    deviation, error = np.asarray(deviation, dtype=np.float64), np.asarray(error, dtype=np.float64)
    if threshold is None:
        threshold = float(np.percentile(deviation, 90))
    above = deviation > threshold
    return {
        "rank_correlation": rank_correlation(deviation, error),
        "threshold": float(threshold),
        "count_above": int(above.sum()),
        "count_below": int((~above).sum()),
        "mean_error_above": float(error[above].mean()) if above.any() else None,
        "mean_error_below": float(error[~above].mean()) if (~above).any() else None,
        "mean_deviation": float(deviation.mean()),
        "mean_error": float(error.mean()),
    }
