"""An exactly E(3)-equivariant direct-force model.

Atoms carry only invariant features: message passing over (q, eps, sigma), the bond-class one-hot and
a Gaussian expansion of the distance. The force is then built from the only vectors in the graph,
F_i = Σ_j s_ij r̂_ij, with one learned invariant s_ij per edge. Rotating, translating or permuting the
input therefore rotates, leaves, or permutes the output, by construction rather than by training.

s_ij is symmetric in i and j (it sees x_i + x_j, x_i ⊙ x_j and pair features), and r̂_ji = -r̂_ij, so
the forces of a frame sum to zero (Newton's third law), and a cosine envelope takes s_ij smoothly to
zero at the cutoff."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn.norm import GraphNorm

from gnnmd.data.graphs import N_BOND_CLASSES, model_onehot
from gnnmd.data.topology import N_NODE_FEATURES
from gnnmd.models.base import ForceModel
from gnnmd.models.layers import MLP, GaussianBasis, cosine_envelope, graph_index, sum_to_receivers


class InvariantLayer(nn.Module):
    """x_i + GraphNorm(MLP(Σ_j envelope(r_ij) MLP((x_i ⊙ x_j) ‖ e_ij)))."""

    def __init__(self, hidden: int, mlp_layers: int, dropout: float):
        super().__init__()
        self.message = MLP(2 * hidden, hidden, hidden, mlp_layers, dropout)
        self.update = MLP(hidden, hidden, hidden, mlp_layers, dropout)
        self.norm = GraphNorm(hidden)

    def forward(self, x, edge, envelope, edge_index, graph):
        j, i = edge_index
        messages = self.message(torch.cat([x[i] * x[j], edge], dim=1)) * envelope[:, None]
        return x + self.norm(self.update(sum_to_receivers(messages, i, x.shape[0])), graph)


class EqForce(ForceModel):
    family = "eqforce"
    equivariant = True
    freeze_groups = {
        "encoders": ("node_encoder", "edge_encoder"),
        "mp1": ("layers.0",),
        "mp2": ("layers.1",),
        "mp3": ("layers.2",),
        "decoder": ("edge_head",),
    }
    cutoff_buffers = ("basis.centers",)

    def __init__(
        self,
        cutoff: float = 5.0,
        hidden: int = 64,
        mlp_layers: int = 2,
        layers: int = 3,
        radial: int = 16,
        dropout: float = 0.0,
        edge_classes: int = N_BOND_CLASSES,
    ):
        super().__init__(
            cutoff=float(cutoff), hidden=hidden, mlp_layers=mlp_layers, layers=layers, radial=radial, dropout=dropout,
            edge_classes=int(edge_classes),
        )  # fmt: skip
        self.basis = GaussianBasis(radial, self.cutoff)
        self.node_encoder = MLP(N_NODE_FEATURES, hidden, hidden, mlp_layers, dropout)
        self.edge_encoder = MLP(self.n_edge_classes + radial, hidden, hidden, mlp_layers, dropout)
        self.layers = nn.ModuleList(InvariantLayer(hidden, mlp_layers, dropout) for _ in range(layers))
        self.edge_head = MLP(3 * hidden, 1, hidden, mlp_layers, dropout)

    def forward(self, batch) -> dict:
        graph = graph_index(batch)
        j, i = batch.edge_index
        vectors = batch.edge_vec  # r_j - r_i (+ image shift): from i towards j
        distance = vectors.norm(dim=1)
        envelope = cosine_envelope(distance, self.cutoff)
        onehot = model_onehot(batch.edge_attr, self.n_edge_classes)
        edge = self.edge_encoder(torch.cat([onehot, self.basis(distance)], dim=1))
        x = self.node_encoder(batch.x)
        for layer in self.layers:
            x = layer(x, edge, envelope, batch.edge_index, graph)
        pair = torch.cat([x[i] + x[j], x[i] * x[j], edge], dim=1)
        strength = self.edge_head(pair)[:, 0] * envelope  # s_ij > 0 pushes i towards j
        units = vectors / distance[:, None]
        forces = sum_to_receivers(strength[:, None] * units, i, x.shape[0])
        return {"forces": forces * self.force_scale}
