"""Building blocks shared by the model families: MLPs, neighbour sums, radial features, envelopes."""

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
