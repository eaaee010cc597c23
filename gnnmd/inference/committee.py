"""A committee of models of one system: their mean force drives MD, and how much they disagree (the force
deviation) says where the models are guessing. Members trained alike on the same data agree where the
data was; away from it each extrapolates its own way.

The deviation of atom i is sqrt(mean_k |F_k,i - mean_k F_k,i|^2) (kcal/mol/A), as DeePMD-kit defines it;
a frame's is the largest over its atoms. `deviation_quality` measures how well it ranks the true errors."""

from __future__ import annotations

import numpy as np

from gnnmd.inference.forces import CoulombPart, ModelForces


def force_deviation(forces: np.ndarray) -> np.ndarray:
    """Per-atom deviation (N,) of the members' forces (K, N, 3): the RMS distance to their mean force."""
    forces = np.asarray(forces, dtype=np.float64)
    spread = forces - forces.mean(axis=0, keepdims=True)
    return np.sqrt((spread**2).sum(axis=2).mean(axis=0))


def _same_settings(members: list[ModelForces], checkpoints: list) -> None:
    """Members must describe the same physics outside the learned part: the same Coulomb treatment."""
    first = members[0].info.electrostatics
    for member, path in zip(members[1:], checkpoints[1:]):
        if member.info.electrostatics != first:
            raise ValueError(
                f"{path}: the committee's models must be trained with the same Coulomb settings, but it has "
                f"{member.info.electrostatics} and {checkpoints[0]} has {first}"
            )


class CommitteeForces:
    """Several checkpoints as one force function (like ModelForces): the members' mean forces and energy;
    `last_deviation` holds the per-atom force deviation of the last call. The PME Coulomb part, the same
    for every member, is computed once (with `electrostatics`)."""

    def __init__(self, checkpoints, topology, system: str = "system", allow_unknown_types: bool = False,
                 electrostatics: bool = True, device: str = "cpu", precision: str = "float32"):  # fmt: skip
        if len(checkpoints) < 2:
            raise ValueError(f"a committee needs at least two models, got {len(checkpoints)}")
        self.members = [
            ModelForces(
                path, topology, system, allow_unknown_types, electrostatics=False, device=device, precision=precision
            )
            for path in checkpoints
        ]
        _same_settings(self.members, list(checkpoints))
        self.info, self.device = self.members[0].info, self.members[0].device
        self.topology = topology
        self.electrostatics = self.info.electrostatics if electrostatics else None
        self.coulomb: CoulombPart | None = None  # the same for every member: added once to their mean
        self.prepared = False
        self.last_deviation: np.ndarray | None = None
        self.last_virial: np.ndarray | None = None  # the members' mean virial (plus the Coulomb part's)
        self.wall_contacts: int | None = None  # calls in which a wall of any member acted

    @property
    def supports_virial(self) -> bool:
        return all(member.supports_virial for member in self.members)

    @property
    def virial(self) -> bool:
        return self.members[0].virial

    @virial.setter
    def virial(self, value: bool) -> None:
        for member in self.members:
            member.virial = value

    def _count_walls(self) -> None:
        counted = [m.wall_contacts is not None for m in self.members]
        if any(counted):
            self.wall_contacts = (self.wall_contacts or 0) + int(any(m.wall_active for m in self.members))

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, float | None]:
        results = [member(positions, cell) for member in self.members]
        self._count_walls()
        forces = np.stack([f for f, _ in results])
        self.last_deviation = force_deviation(forces)
        mean = forces.mean(axis=0)
        energies = [e for _, e in results]
        energy = None if any(e is None for e in energies) else float(np.mean(energies))
        virials = [member.last_virial for member in self.members]
        virial = None if not self.virial or virials[0] is None else np.mean(virials, axis=0)
        if not self.prepared:
            part = CoulombPart.of(self.electrostatics, self.topology, cell)
            self.coulomb, self.prepared = None if part is None else part.to(self.device), True
        if self.coulomb is not None:
            positions, cell = np.asarray(positions, dtype=np.float64), np.asarray(cell, dtype=np.float64)
            mean, energy, virial = self.coulomb.add(positions, cell, mean, energy, virial)
        self.last_virial = virial
        return mean, energy


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
    correlation = rank_correlation(deviation, error)
    return {
        "rank_correlation": correlation if np.isfinite(correlation) else None,
        "threshold": float(threshold),
        "count_above": int(above.sum()),
        "count_below": int((~above).sum()),
        "mean_error_above": float(error[above].mean()) if above.any() else None,
        "mean_error_below": float(error[~above].mean()) if (~above).any() else None,
        "mean_deviation": float(deviation.mean()),
        "mean_error": float(error.mean()),
    }


def evaluate_committee(model_paths, data_path, split: str = "all", batch_size: int = 1, progress: bool = True,
                       device: str = "cpu", threshold: float | None = None,
                       allow_unknown_types: bool = False):  # fmt: skip
    """`evaluate_checkpoint` of a committee: the errors of the members' mean force (the force MD uses), each
    member's force MAE, and how well the force deviation predicts the true error (deviation_quality), per
    atom and per frame (a frame's largest deviation against its largest error)."""
    import torch

    from gnnmd.inference.evaluate import evaluate_checkpoint
    from gnnmd.inference.metrics import ForceMetrics

    runs = [evaluate_checkpoint(path, data_path, split, batch_size, progress, device, allow_unknown_types)
            for path in model_paths]  # fmt: skip
    result, info = runs[0]
    preds = np.stack([run.pop("pred") for run, _ in runs])  # (K, M, 3), the same frames in the same order
    mean = preds.mean(axis=0)
    metrics = ForceMetrics(result["type_labels"])
    metrics.update(torch.from_numpy(mean), torch.from_numpy(result["ref"]), torch.from_numpy(result["atom_type"]))
    summary = metrics.summary()
    summary.pop("loss", None)
    result.update(summary)
    result.update(relative_force_mae=result["force_mae"] / result["mean_abs_force"], pred=mean,
                  model=[str(p) for p in model_paths])  # fmt: skip
    deviation = force_deviation(preds)
    error = np.linalg.norm(mean - result["ref"], axis=1)
    per_frame = (-1, result["atoms_per_frame"])
    result["committee"] = {
        "members": [str(p) for p in model_paths],
        "member_force_mae": [run["force_mae"] for run, _ in runs],
        "per_atom": deviation_quality(deviation, error, threshold),
        "per_frame": deviation_quality(deviation.reshape(per_frame).max(1), error.reshape(per_frame).max(1), threshold),
        "frame_max_deviation": deviation.reshape(per_frame).max(1).tolist(),
    }
    return result, info


def format_committee(committee: dict) -> str:
    """The committee part of `gnnmd evaluate`'s table."""
    lines = ["members' force MAE: " + ", ".join(f"{mae:.3f}" for mae in committee["member_force_mae"])]
    for level in ("per_atom", "per_frame"):
        q = committee[level]
        above = "n/a" if q["mean_error_above"] is None else f"{q['mean_error_above']:.3f}"
        below = "n/a" if q["mean_error_below"] is None else f"{q['mean_error_below']:.3f}"
        correlation = "n/a" if q["rank_correlation"] is None else f"{q['rank_correlation']:.3f}"
        lines.append(
            f"deviation vs error {level.replace('_', ' ')}: rank correlation {correlation}; "
            f"mean |error| {above} above the deviation {q['threshold']:.3g} ({q['count_above']}), {below} below"
        )
    return "\n".join(lines)
