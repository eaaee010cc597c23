"""What every model family looks like to the rest of gnnmd.

Convention (all families): `forward(batch)` returns `{"forces": (N, 3)}` in physical units
(kcal/mol/A). The network itself works in normalised units; the model multiplies by its
`force_scale` buffer (the training set's force RMS, set by the trainer through `set_normalisation`),
so a checkpoint's model predicts physical forces with nothing else. Energy models add `"energy"` (B,)
in kcal/mol and may use the `energy_shift` buffer (mean per-atom energy of the training set); those with
`predicts_virial` also give `"virial"` (B, 3, 3, kcal/mol) when called as `forward(batch, virial=True)`.
Every model has one graph cutoff, `hyper["cutoff"]`."""

from __future__ import annotations

import torch
from torch import nn


class ForceModel(nn.Module):
    """Base of every model family.

    Subclasses set `family`, call `super().__init__(**hyper)` with their keyword hyper-parameters
    (kept as `self.hyper`, which is what a checkpoint stores to rebuild the model), and may set
    `equivariant` (if False the trainer augments with random rotations), `needs_grad` (if True
    evaluation runs under `torch.enable_grad()`, for forces by autograd), `predicts_virial` (if True
    `forward(batch, virial=True)` adds the virial, minus the strain derivative of the energy: what
    `--stress-weight` trains) and `freeze_groups` (names accepted by `gnnmd finetune --freeze`, mapped to
    parameter-name prefixes)."""

    family = "base"
    equivariant = False
    needs_grad = False
    predicts_virial = False
    freeze_groups: dict[str, tuple[str, ...]] = {}
    cutoff_buffers: tuple[str, ...] = ()  # state that a new cutoff recomputes (see with_cutoff)

    def __init__(self, **hyper):
        super().__init__()
        self.hyper = dict(hyper)
        self.register_buffer("force_scale", torch.tensor(1.0))
        self.register_buffer("energy_shift", torch.tensor(0.0))

    def set_normalisation(self, normalisation: dict) -> None:
        """Physical scales from the training set: `force_scale` (force RMS, kcal/mol/A) and, when energies
        are known, `energy_shift` (mean potential energy per atom, kcal/mol)."""
        self.force_scale.fill_(float(normalisation["force_scale"]))
        self.energy_shift.fill_(float(normalisation.get("energy_shift") or 0.0))

    def check_system(self, topology, where: str = "") -> None:
        """Refuse, with a ValueError starting with `where`, a system the model cannot describe whatever its
        atom types (csnequip without special_bonds weights: molecules with several Lennard-Jones sites)."""

    def fit_priors(self, frames, coulomb=None, indices=None) -> dict | None:
        """Fit what the family takes from its training frames rather than learning it (nequip: per-type
        scale/shift and walls, gnnmd.models.priors); returns what was fitted, or None (nothing to fit)."""
        return None

    @property
    def n_edge_classes(self) -> int:
        """How many bond classes the model tells apart (gnnmd.data.graphs.model_onehot); its checkpoint
        records it, and one made before the 1-4 class has three."""
        return int(self.hyper["edge_classes"])

    @property
    def cutoff(self) -> float:
        """The graph cutoff (A): owned by the model, written in its checkpoint; graphs are built with it."""
        return float(self.hyper["cutoff"])

    def with_cutoff(self, cutoff: float) -> ForceModel:
        """This model's weights on graphs of another cutoff, for fine-tuning on a system whose interactions
        reach further (argon's LJ tail). Radial bases and envelopes are functions of r / cutoff, so they
        stretch; the buffers named in `cutoff_buffers` are taken from a fresh model of the new cutoff."""
        model = type(self)(**{**self.hyper, "cutoff": float(cutoff)})
        fresh = model.state_dict()
        model.load_state_dict({k: fresh[k] if k in self.cutoff_buffers else v for k, v in self.state_dict().items()})
        return model.train(self.training)

    def parameters_of(self, group: str) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs of a freeze group, or of a raw parameter-name prefix."""
        prefixes = self.freeze_groups.get(group, (group,))
        found = [(n, p) for n, p in self.named_parameters() if any(n == q or n.startswith(q + ".") for q in prefixes)]
        if not found:
            known = ", ".join(sorted(self.freeze_groups)) or "none"
            raise ValueError(f"{self.family} has no part named {group!r} (groups: {known}; or a parameter prefix)")
        return found
