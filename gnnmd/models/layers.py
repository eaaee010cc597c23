"""Building blocks shared by the model families: MLPs, neighbour sums, radial features, and the base
class that fixes what every model looks like to the trainer.

Convention (all families): `forward(batch)` returns `{"forces": (N, 3)}` in physical units
(kcal/mol/A). The network itself works in normalised units; the model multiplies by its
`force_scale` buffer (the training set's force RMS, set by the trainer through `set_normalisation`),
so a checkpoint's model predicts physical forces with nothing else. Energy models add `"energy"` (B,)
in kcal/mol and may use the `energy_shift` buffer (mean per-atom energy of the training set)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import scatter


class MLP(nn.Sequential):
    """`layers` hidden layers of width `hidden`, each followed by PReLU and dropout (the study's block),
    then a linear output layer."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 128, layers: int = 3, dropout: float = 0.1, he_init: bool = False
    ):
        modules: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), nn.PReLU(hidden)]
            if dropout > 0:
                modules.append(nn.Dropout(dropout))
            width = hidden
        modules.append(nn.Linear(width, out_dim))
        super().__init__(*modules)
        # he_init: He initialisation for PReLU (slope 0.25) and zero biases. With torch's default init
        # the input signal shrinks ~2x per layer and drowns in bias noise across deep stacks such as
        # the study's (encoder + message + update + decoder, 4 linear layers each).
        for module in self if he_init else ():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)


def sum_to_receivers(messages: torch.Tensor, receivers: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Σ_j m_ji for each receiving atom i (edge_index[1])."""
    return scatter(messages, receivers, dim=0, dim_size=n_nodes, reduce="sum")


def cosine_envelope(distance: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Goes smoothly to zero at the cutoff, so edges entering or leaving the neighbour list change
    nothing abruptly."""
    inside = (distance < cutoff).to(distance.dtype)
    return 0.5 * (torch.cos(math.pi * distance / cutoff) + 1.0) * inside


class GaussianBasis(nn.Module):
    """Distance expanded on `n` Gaussians evenly spaced on [0, cutoff]."""

    def __init__(self, n: int, cutoff: float):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n))
        self.width = cutoff / max(n - 1, 1)

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(((distance[:, None] - self.centers) / self.width) ** 2))


def graph_index(batch) -> torch.Tensor:
    """Graph number of each atom; a lone Data (no `batch`) is graph 0."""
    index = getattr(batch, "batch", None)
    if index is None:
        index = torch.zeros(batch.num_nodes, dtype=torch.long, device=batch.pos.device)
    return index


class ForceModel(nn.Module):
    """Base of every model family.

    Subclasses set `family`, call `super().__init__(**hyper)` with their keyword hyper-parameters
    (kept as `self.hyper`, which is what a checkpoint stores to rebuild the model), and may set
    `equivariant` (if False the trainer augments with random rotations), `needs_grad` (if True
    evaluation runs under `torch.enable_grad()`, for forces by autograd), and `freeze_groups`
    (names accepted by `gnnmd finetune --freeze`, mapped to parameter-name prefixes)."""

    family = "base"
    equivariant = False
    needs_grad = False
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

    def with_cutoff(self, cutoff: float) -> "ForceModel":
        """This model's weights on graphs of another cutoff, for fine-tuning on a system whose interactions
        reach further (argon's LJ tail). Radial bases and envelopes are functions of r / cutoff, so they
        stretch; the buffers named in `cutoff_buffers` are taken from a fresh model of the new cutoff."""
        if self.hyper.get("cutoff") is None:  # the weights do not depend on the cutoff (mpnn on raw distance)
            return self
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
