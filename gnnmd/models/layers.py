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


class RadialTable:
    """Smooth functions of a distance, one set of `columns` per row class (e.g. bond class), tabulated on
    [0, r_max] as piecewise cubic Hermite polynomials: value and slope are exact at every node, so the
    interpolant and its first derivative are continuous, and `lookup` differentiates the cubic exactly.
    At and beyond r_max the table is zero (for functions that vanish there with their slope, such as a
    radial MLP times a cutoff envelope). The error of the slope falls as step^3 (step = r_max / intervals).

    `function(r, c)`: float64 (K + 1,) node distances and a class -> (K + 1, columns); it must be
    differentiable in r (forward-mode autograd gives the slopes). Tables are kept in `dtype`."""

    def __init__(self, function, n_classes: int, r_max: float, intervals: int, dtype=torch.float32):
        self.r_max, self.intervals = float(r_max), int(intervals)
        self.step = self.r_max / self.intervals
        # node 0 sits a hair above 0, where functions like sin(kr)/r are 0/0 (their limit differs by ~1e-12)
        nodes = torch.linspace(0.0, self.r_max, self.intervals + 1, dtype=torch.float64).clamp(min=1e-6)
        blocks = []
        for c in range(n_classes):
            with torch.no_grad(), torch.autograd.forward_ad.dual_level():
                dual = torch.autograd.forward_ad.make_dual(nodes, torch.ones_like(nodes))
                values, slopes = torch.autograd.forward_ad.unpack_dual(function(dual, c))
            blocks.append(hermite_coefficients(values, slopes, self.step))
            blocks.append(torch.zeros_like(blocks[-1][:1]))  # row `intervals`: r >= r_max
        coefficients = torch.cat(blocks)  # (n_classes * (intervals + 1), 4, columns)
        self.columns = coefficients.shape[-1]
        self.rows_per_class = self.intervals + 1
        self.coefficients = coefficients.reshape(len(coefficients), -1).to(dtype).contiguous()

    def locate(self, r: torch.Tensor, first_row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(table row, position t within the interval) of each distance, given the first row of its class
        (class * rows_per_class); distances at or past r_max get the zero row."""
        s = r * (1.0 / self.step)
        k = s.long().clamp_(max=self.intervals)  # r >= 0: truncation is the floor
        t = s - k.to(s.dtype)  # from the same k as the row, so that the two always agree
        return k.add_(first_row), t

    def lookup(self, row: torch.Tensor, t: torch.Tensor, out: tuple | None = None):
        """Values (E, columns) at (row, t); with `out` = (values, slopes) tensors (E, columns), writes both
        there, the slopes as d/dt (d/dr = slope / step)."""
        c = self.coefficients.index_select(0, row).view(len(row), 4, self.columns)
        t = t[:, None]
        a = torch.addcmul(c[:, 2], t, c[:, 3])
        b = torch.addcmul(c[:, 1], t, a)
        if out is None:
            return torch.addcmul(c[:, 0], t, b)
        torch.addcmul(c[:, 0], t, b, out=out[0])
        # c1 + 2 c2 t + 3 c3 t^2 = b + t (a + t c3)
        torch.addcmul(b, t, torch.addcmul(a, t, c[:, 3]), out=out[1])
        return out[0]


def hermite_coefficients(values: torch.Tensor, slopes: torch.Tensor, step: float) -> torch.Tensor:
    """Power-basis coefficients (K, 4, C) of the cubic Hermite interpolant on each of K intervals of width
    `step`, in t = (r - r_k) / step, from values and slopes (K + 1, C) at the nodes."""
    y0, y1 = values[:-1], values[1:]
    m0, m1 = slopes[:-1] * step, slopes[1:] * step
    return torch.stack([y0, m0, 3 * (y1 - y0) - 2 * m0 - m1, 2 * (y0 - y1) + m0 + m1], dim=1)
