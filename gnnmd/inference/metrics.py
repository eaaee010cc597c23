"""Force (and energy, and virial) error sums gathered batch by batch and turned into MAE/RMSE overall, per
Cartesian component and per atom type. Everything sits in one float64 tensor, so data-parallel ranks combine
their sums with a single all_reduce."""

from __future__ import annotations

import math

import torch

from gnnmd.units import VOIGT_COLUMNS, VOIGT_ROWS

COMPONENTS = ("x", "y", "z")


def type_labels(type_table: list[dict]) -> list[str]:
    """One short label per row of a type table: the element name, made unique with the LAMMPS type id."""
    names = [row["name"] for row in type_table]
    return [n if names.count(n) == 1 else f"{n}{row['type_id']}" for n, row in zip(names, type_table)]


class ForceMetrics:
    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        t = len(labels)
        # abs(3) sq(3) atoms(1) | abs_t(T) sq_t(T) atoms_t(T) | sum|F comp|(1) loss(1) batches(1) | eabs eSq graphs
        # | virial abs per atom, virial components
        self._t = t
        self.sums = torch.zeros(15 + 3 * t, dtype=torch.float64)

    def update(
        self, pred, target, atom_type, loss=None, energy_pred=None, energy_ref=None, atoms_per_graph=None,
        virial_pred=None, virial_ref=None,
    ):  # fmt: skip
        pred, target = pred.detach().double().cpu(), target.detach().double().cpu()  # sums live on the CPU
        err = pred - target
        t, s = self._t, self.sums
        s[0:3] += err.abs().sum(0)
        s[3:6] += (err**2).sum(0)
        s[6] += err.shape[0]
        idx = atom_type.long().cpu()
        s[7 : 7 + t] += torch.zeros(t, dtype=torch.float64).index_add_(0, idx, err.abs().sum(1))
        s[7 + t : 7 + 2 * t] += torch.zeros(t, dtype=torch.float64).index_add_(0, idx, (err**2).sum(1))
        s[7 + 2 * t : 7 + 3 * t] += torch.bincount(idx, minlength=t)[:t].double()
        base = 7 + 3 * t
        s[base] += target.abs().sum()
        if loss is not None:
            s[base + 1] += float(loss)
            s[base + 2] += 1
        if energy_pred is not None and energy_ref is not None:
            per_atom = (energy_pred.detach().double() - energy_ref.double()).cpu() / atoms_per_graph.double().cpu()
            s[base + 3] += per_atom.abs().sum()
            s[base + 4] += (per_atom**2).sum()
            s[base + 5] += per_atom.numel()
        if virial_pred is not None and virial_ref is not None:  # the six components, per atom of each graph
            error = (virial_pred.detach().double() - virial_ref.double()).cpu()[:, VOIGT_ROWS, VOIGT_COLUMNS]
            s[base + 6] += (error.abs() / atoms_per_graph.double().cpu()[:, None]).sum()
            s[base + 7] += error.numel()

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            nccl = dist.get_backend() == "nccl"  # it reduces GPU tensors only
            sums = self.sums.to(torch.device("cuda", torch.cuda.current_device())) if nccl else self.sums
            dist.all_reduce(sums)
            self.sums = sums.cpu()

    def summary(self) -> dict:
        """Errors in kcal/mol/A (energies and virials kcal/mol per atom; the virial MAE over its six
        components, as gnnmd.inference.evaluate.virial_errors); NaN where nothing was seen."""
        t, s = self._t, self.sums.tolist()
        n = s[6]

        def ratio(a, b):
            return a / b if b else math.nan

        out = {
            "force_mae": ratio(sum(s[0:3]), 3 * n),
            "force_rmse": math.sqrt(ratio(sum(s[3:6]), 3 * n)) if n else math.nan,
        }
        for k, c in enumerate(COMPONENTS):
            out[f"force_mae_{c}"] = ratio(s[k], n)
        for k, c in enumerate(COMPONENTS):
            out[f"force_rmse_{c}"] = math.sqrt(ratio(s[3 + k], n)) if n else math.nan
        for k, label in enumerate(self.labels):
            count = 3 * s[7 + 2 * t + k]
            out[f"force_mae_{label}"] = ratio(s[7 + k], count)
            out[f"force_rmse_{label}"] = math.sqrt(ratio(s[7 + t + k], count)) if count else math.nan
        base = 7 + 3 * t
        out["mean_abs_force"] = ratio(s[base], 3 * n)
        out["loss"] = ratio(s[base + 1], s[base + 2])
        if s[base + 5]:
            out["energy_mae_per_atom"] = s[base + 3] / s[base + 5]
            out["energy_rmse_per_atom"] = math.sqrt(s[base + 4] / s[base + 5])
        if s[base + 7]:
            out["virial_mae_per_atom"] = s[base + 6] / s[base + 7]
        return out
