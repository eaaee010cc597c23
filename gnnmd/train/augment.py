"""Random rotations of whole graphs, for models that are not equivariant (the study's mpnn).

Everything that is a vector turns with the same rotation: positions, edge vectors, the unit-vector
columns of edge_attr, the cell's lattice vectors and the target forces; a target virial (sum of r f^T,
the strain derivative of the energy) turns as the tensor it is, W -> R W R^T."""

from __future__ import annotations

import torch

from gnnmd.data.graphs import UNIT_VECTOR
from gnnmd.models.layers import graph_index


def random_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, 3) rotation matrices, uniform over SO(3) (QR of Gaussian matrices, signs fixed)."""
    a = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    flip = torch.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q.float()


def rotate_batch(batch, rotations: torch.Tensor):
    """The batch with graph b rotated by rotations[b] (v -> R v); returns the same object, new tensors."""
    graph = graph_index(batch)
    per_atom = rotations[graph]
    per_edge = rotations[graph[batch.edge_index[1]]]

    def turn(matrices, vectors):
        return torch.einsum("nij,nj->ni", matrices, vectors)

    batch.pos = turn(per_atom, batch.pos)
    batch.edge_vec = turn(per_edge, batch.edge_vec)
    attr = batch.edge_attr
    rotated = turn(per_edge, attr[:, UNIT_VECTOR])
    batch.edge_attr = torch.cat([attr[:, : UNIT_VECTOR.start], rotated, attr[:, UNIT_VECTOR.stop :]], dim=1)
    batch.cell = batch.cell @ rotations.transpose(1, 2)  # rows are lattice vectors
    if getattr(batch, "y", None) is not None:
        batch.y = turn(per_atom, batch.y)
    if getattr(batch, "virial", None) is not None:
        turned = rotations.to(batch.virial.dtype)
        batch.virial = turned @ batch.virial @ turned.transpose(1, 2)
    return batch
