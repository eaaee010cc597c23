"""The nequip energy model for inference: the same energy as NequIP, with each radial MLP tabulated as a
cubic Hermite spline per bond class, on a half neighbour list, with the edge sums in chunks and a
hand-written backward, so a force call is ~5x faster and keeps no per-edge intermediates beyond a chunk
(benchmarks/throughput.py, scaling.py). `TabulatedNequIP(model)` reads the model and leaves it as it is;
never used in training and never stored in a checkpoint."""

from __future__ import annotations

import copy
import math

import torch
from e3nn import o3
from torch.autograd.function import once_differentiable

from gnnmd.data.graphs import NONBONDED, model_class_ids
from gnnmd.models import priors
from gnnmd.models.layers import RadialTable
from gnnmd.models.nequip import Interaction, NequIP, polynomial_envelope, repulsion_energy

# --------------------------------------------------------------------------------------------------
# Inference: the same energy with each radial MLP tabulated (NequIP.tabulated), on a half neighbour list.
# Used by the force function of a system (gnnmd.inference.ModelForces); training and evaluation use the
# model itself.


class _Path:
    """One uvu tensor-product path of a tabulated layer, on features laid out component-major (d, U):
    out[e, k, u] = w[e, u] sum_ij x[s(e), i, u] Y[e, j] C[i, j, k], with the path's constants (path
    weight, Wigner 3j normalisation, 1 / sqrt(neighbour count)) folded into the radial table's columns.
    `kind`: "scale" (harmonic l = 0: C ~ identity in i, k), "outer" (input l = 0), "dot" (output l = 0),
    or "general" (C itself). `block`: its input irrep; `y`: its harmonics' columns."""

    def __init__(self, kind, block, y, u, d1, d3, matrix=None):
        self.kind, self.block, self.y, self.u, self.d1, self.d3, self.matrix = kind, block, y, u, d1, d3, matrix

    def forward(self, x, w, Y):
        """Messages (E, d3 * U) from gathered features x (E, d1, U), radial weights w (E, U), harmonics Y."""
        if self.kind == "scale":
            return (x * w[:, None, :]).flatten(1)
        y = Y[:, self.y]
        if self.kind == "outer":
            return _outer(y, x[:, 0] * w).flatten(1)
        if self.kind == "dot":
            return _contract(x, y) * w
        P = (y @ self.matrix).view(len(y), self.d1, self.d3)
        return torch.bmm(P.transpose(1, 2), x * w[:, None, :]).flatten(1)

    def backward(self, x, w, Y, g, want_x: bool):
        """Gradients (w (E, U), x (E, d1, U) or None, harmonics (E, d2) or None) from the messages' `g`."""
        g = g.view(len(g), self.d3, self.u)
        if self.kind == "scale":
            g_w = g[:, 0] * x[:, 0] if self.d1 == 1 else (g * x).sum(1)
            return g_w, g * w[:, None, :] if want_x else None, None
        y = Y[:, self.y]
        if self.kind == "outer":
            g_z = _contract(g, y)
            g_x = (g_z * w)[:, None, :] if want_x else None
            return g_z * x[:, 0], g_x, torch.bmm(g, (x[:, 0] * w)[:, :, None])[:, :, 0]
        if self.kind == "dot":
            gw = g[:, 0] * w
            g_x = _outer(y, gw) if want_x else None
            return g[:, 0] * _contract(x, y), g_x, torch.bmm(x, gw[:, :, None])[:, :, 0]
        P = (y @ self.matrix).view(len(y), self.d1, self.d3)
        g_xw = torch.bmm(P, g)
        g_P = torch.bmm(x * w[:, None, :], g.transpose(1, 2))
        return (g_xw * x).sum(1), g_xw * w[:, None, :] if want_x else None, g_P.flatten(1) @ self.matrix.T


def _outer(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """y[:, k, None] * z[:, None, :]: (E, d), (E, U) -> (E, d, U), one row-scaling per k (a broadcast over
    both inner dimensions at once is several times slower on CPU)."""
    out = z.new_empty(len(z), y.shape[1], z.shape[1])
    for k in range(y.shape[1]):
        torch.mul(z, y[:, k : k + 1], out=out[:, k])
    return out


def _contract(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sum_k x[:, k, :] * y[:, k, None]: (E, d, U), (E, d) -> (E, U), as d multiply-adds over rows of U."""
    out = x[:, 0] * y[:, :1]
    for k in range(1, x.shape[1]):
        out = torch.addcmul(out, x[:, k], y[:, k : k + 1])
    return out


def _path_kind(l1: int, l2: int, l3: int) -> tuple[str, float]:
    """The path's kind and the constant its Wigner 3j reduces to (1 for "general")."""
    C = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    for kind, degree, matrix in (("scale", l2, C[:, 0, :]), ("outer", l1, C[0]), ("dot", l3, C[:, :, 0])):
        if degree == 0:
            scale = float(matrix[0, 0])
            if torch.allclose(matrix, scale * torch.eye(len(matrix), dtype=torch.float64), atol=1e-12):
                return kind, scale
    return "general", 1.0


class _Harmonics:
    """Distance and spherical harmonics of pair vectors, and the vector-Jacobian product back to the
    vectors: closed form for l_max = 1 (Y = (1, sqrt(3) r_hat) in e3nn's component normalisation),
    e3nn and autograd otherwise. `parity`: (-1)^l per component, Y(-v) = parity * Y(v)."""

    def __init__(self, irreps_sh, dtype):
        self.irreps, self.dim = irreps_sh, irreps_sh.dim
        self.parity = torch.cat([torch.full((ir.dim,), float(ir.p)) for _, ir in irreps_sh]).to(dtype)
        probe = torch.tensor([[0.3, -1.2, 2.1]], dtype=torch.float64)
        closed = torch.cat([torch.ones(1, 1, dtype=torch.float64), math.sqrt(3.0) * probe / probe.norm()], dim=1)
        self.closed = irreps_sh.lmax == 1 and torch.allclose(self._e3nn(probe), closed, atol=1e-12)

    def _e3nn(self, vectors):
        return o3.spherical_harmonics(self.irreps, vectors, normalize=True, normalization="component")

    def __call__(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.linalg.vector_norm(vectors, dim=1)
        if self.closed:
            return r, torch.cat([torch.ones_like(r)[:, None], vectors * (math.sqrt(3.0) / r)[:, None]], dim=1)
        return r, self._e3nn(vectors)

    def vjp(self, vectors, r, Y, g_r, g_Y) -> torch.Tensor:
        if self.closed:
            root3 = math.sqrt(3.0)
            unit, g_y = Y[:, 1:] * (1.0 / root3), g_Y[:, 1:]
            radial = g_r - root3 * (g_y * unit).sum(1) / r
            return torch.addcmul(unit * radial[:, None], g_y, (root3 / r)[:, None])
        with torch.enable_grad():
            v = vectors.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad((torch.linalg.vector_norm(v, dim=1), self._e3nn(v)), v, (g_r, g_Y))
        return grad


class _TabulatedLayer:
    """The edge part of one Interaction: its radial MLP times the envelope tabulated per bond class
    (RadialTable), and its tensor-product paths on component-major features. The last layer computes only
    the paths to scalars (l = 0): the readout sees nothing else."""

    def __init__(self, model: NequIP, block: Interaction, last: bool, intervals: int, dtype):
        tp = block.tp
        in_slices, sh_slices, mid_slices = tp.irreps_in1.slices(), tp.irreps_in2.slices(), tp.irreps_out.slices()
        self.in_blocks = [(s, mul, ir.dim) for s, (mul, ir) in zip(in_slices, tp.irreps_in1)]
        norm = math.sqrt(float(model.avg_num_neighbors)) if float(model.avg_num_neighbors) > 0 else 1.0
        self.paths, columns, factors, self.mid_columns = [], [], [], []
        starts = [sum(math.prod(i.path_shape) for i in tp.instructions[:k]) for k in range(len(tp.instructions))]
        for start, ins in sorted(zip(starts, tp.instructions), key=lambda pair: pair[1].i_out):
            mul, ir1 = tp.irreps_in1[ins.i_in1]
            ir2, ir3 = tp.irreps_in2[ins.i_in2].ir, tp.irreps_out[ins.i_out].ir
            if last and ir3.l > 0:
                continue
            kind, constant = _path_kind(ir1.l, ir2.l, ir3.l)
            matrix = None
            if kind == "general":
                C = o3.wigner_3j(ir1.l, ir2.l, ir3.l, dtype=torch.float64)
                matrix = C.permute(1, 0, 2).reshape(ir2.dim, ir1.dim * ir3.dim).to(dtype)
            self.paths.append(_Path(kind, ins.i_in1, sh_slices[ins.i_in2], mul, ir1.dim, ir3.dim, matrix))
            columns.append(torch.arange(start, start + mul))
            factors.append(torch.full((mul,), ins.path_weight * constant / norm, dtype=torch.float64))
            self.mid_columns.append((mid_slices[ins.i_out], mul, ir3.dim))
        self.channels = {path.u for path in self.paths}
        if len(self.channels) != 1 or len({(s.start, s.stop) for s, _, _ in self.mid_columns}) < len(self.paths):
            raise ValueError("a tabulated layer needs one multiplicity and one output block per path")
        (self.channels,) = self.channels
        self.widths = [path.d3 * path.u for path in self.paths]
        self.columns = [slice(k * self.channels, (k + 1) * self.channels) for k in range(len(self.paths))]
        self.mid_dim = tp.irreps_out.dim
        self.table = _radial_table(model, block, torch.cat(columns), torch.cat(factors), intervals, dtype)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """e3nn's (N, [U, d] per irrep) layout -> component-major (N, [d, U] per irrep)."""
        blocks = [x[:, s].reshape(len(x), mul, d).transpose(1, 2).flatten(1) for s, mul, d in self.in_blocks]
        return torch.cat(blocks, dim=1)

    def unpack(self, summed: torch.Tensor) -> torch.Tensor:
        """Component-major sums of the computed paths -> e3nn's layout of the product's output (zero for
        the paths not computed)."""
        n, start = len(summed), 0
        out = summed.new_zeros(n, self.mid_dim)
        for s, mul, d in self.mid_columns:
            out[:, s] = summed[:, start : start + d * mul].reshape(n, d, mul).transpose(1, 2).flatten(1)
            start += d * mul
        return out

    def blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Component-major node features (N, D) -> one contiguous (N, d * U) tensor per input irrep."""
        sizes = [d * mul for _, mul, d in self.in_blocks]
        return [b.contiguous() for b in torch.split(x, sizes, dim=1)]


def _radial_table(model, block, columns, factors, intervals: int, dtype) -> RadialTable:
    """The block's radial MLP (its `columns`, times `factors`) times the cutoff envelope, per bond class,
    tabulated in float64 and kept in `dtype`."""
    basis = copy.deepcopy(model.basis).double()
    radial = copy.deepcopy(block.radial).double()
    cutoff, p, n_classes = model.cutoff, model.envelope_p, model.n_edge_classes

    def function(r, c):
        onehot = torch.zeros(len(r), n_classes, dtype=torch.float64)
        onehot[:, c] = 1.0
        weights = radial(torch.cat([basis(r), onehot], dim=1))[:, columns]
        return weights * (polynomial_envelope(r, cutoff, p)[:, None] * factors)

    return RadialTable(function, n_classes, cutoff, intervals, dtype)


class Pairs:
    """The pairs of one force call, each once (i, j, bond class, shift S @ cell; the vector from i to that
    image of j is r_j - r_i + S @ cell), for both directed edges i <- j and j <- i. Processed in chunks of
    `chunk` pairs, so that per-edge intermediates live for one chunk only. `weight` (P,): the share of each
    pair's own energy terms (prior, walls) that is counted; None: all of it (one rank's share: a domain)."""

    def __init__(self, i, j, pair_class, shift_vectors, rows_per_class: int, chunk: int, weight=None):
        self.i, self.j, self.shift_vectors, self.pair_class = i, j, shift_vectors, pair_class
        self.first_row = pair_class * rows_per_class
        self.chunk = int(chunk)
        self.weight = weight

    def __len__(self) -> int:
        return len(self.i)

    def chunks(self):
        for start in range(0, len(self), self.chunk):
            yield slice(start, min(start + self.chunk, len(self)))

    def vectors(self, pos: torch.Tensor, c: slice) -> torch.Tensor:
        return pos.index_select(0, self.j[c]) - pos.index_select(0, self.i[c]) + self.shift_vectors[c]


class _Geometry(torch.autograd.Function):
    """Per pair: the distance r (P,) and the spherical harmonics Y (P, d) of its vector, from positions;
    the backward turns their gradients into forces on the positions, and into the derivative with
    respect to `strain` (3, 3; zero: it is there to carry the gradient) of every pair vector v -> v (1 + strain):
    sum over pairs of v (x) dE/dv, minus the virial."""

    @staticmethod
    def forward(ctx, pos, strain, harmonics: _Harmonics, pairs: Pairs):
        r, Y = pos.new_empty(len(pairs)), pos.new_empty(len(pairs), harmonics.dim)
        for c in pairs.chunks():
            r[c], Y[c] = harmonics(pairs.vectors(pos, c))
        ctx.harmonics, ctx.pairs = harmonics, pairs
        ctx.save_for_backward(pos, r, Y)
        return r, Y

    @staticmethod
    @once_differentiable
    def backward(ctx, g_r, g_Y):
        pos, r, Y = ctx.saved_tensors
        pairs, harmonics = ctx.pairs, ctx.harmonics
        g_r = torch.zeros_like(r) if g_r is None else g_r
        g_Y = torch.zeros_like(Y) if g_Y is None else g_Y
        g_pos = torch.zeros_like(pos)
        g_strain = pos.new_zeros(3, 3) if ctx.needs_input_grad[1] else None
        for c in pairs.chunks():
            vectors = pairs.vectors(pos, c)
            g_vectors = harmonics.vjp(vectors, r[c], Y[c], g_r[c], g_Y[c])
            g_pos.index_add_(0, pairs.j[c], g_vectors)
            g_pos.index_add_(0, pairs.i[c], g_vectors, alpha=-1.0)
            if g_strain is not None:
                g_strain += vectors.T @ g_vectors
        return g_pos, g_strain, None, None


@torch.no_grad()
def _radial_weights(layers: list[_TabulatedLayer], r: torch.Tensor, pairs: Pairs) -> list[tuple]:
    """Every layer's tabulated radial weights (P, paths x U) at the pairs' distances, and their slopes
    (d/dt): plain tensors, as the layers hand autograd their gradients with respect to r themselves."""
    out = [(r.new_empty(len(r), layer.table.columns), r.new_empty(len(r), layer.table.columns)) for layer in layers]
    for c in pairs.chunks():
        row, t = layers[0].table.locate(r[c], pairs.first_row[c])
        for layer, (w, s) in zip(layers, out):
            layer.table.lookup(row, t, out=(w[c], s[c]))
    return out


def _directions(pairs: Pairs, c: slice, Y: torch.Tensor, harmonics: _Harmonics):
    """(sender, receiver, harmonics, reversed) of both directed edges of the pairs in chunk c: j -> i sees
    the pair vector, i -> j its opposite (Y(-v) = parity * Y(v))."""
    return ((pairs.j[c], pairs.i[c], Y, False), (pairs.i[c], pairs.j[c], Y * harmonics.parity, True))


class _Convolution(torch.autograd.Function):
    """Sum over neighbours of one tabulated layer's messages, (N, width), from component-major node
    features x, each pair's harmonics Y and distance r (through the radial weights W, with their slopes
    S), over both directions of every pair; chunk by chunk, forward and backward alike (the backward
    gathers the features again instead of keeping them). First derivatives only (inference)."""

    @staticmethod
    def forward(ctx, x, Y, r, layer: _TabulatedLayer, harmonics: _Harmonics, pairs: Pairs, W, S):
        ctx.layer, ctx.harmonics, ctx.pairs = layer, harmonics, pairs
        ctx.save_for_backward(x, Y, W, S)
        blocks = layer.blocks(x)
        out = [x.new_zeros(len(x), width) for width in layer.widths]
        for c in pairs.chunks():
            for sender, receiver, y, _ in _directions(pairs, c, Y[c], harmonics):
                xs = [
                    b.index_select(0, sender).view(len(sender), d, mul)
                    for b, (_, mul, d) in zip(blocks, layer.in_blocks)
                ]
                for path, summed, columns in zip(layer.paths, out, layer.columns):
                    summed.index_add_(0, receiver, path.forward(xs[path.block], W[c, columns], y))
        return torch.cat(out, dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, Y, W, S = ctx.saved_tensors
        layer, harmonics, pairs = ctx.layer, ctx.harmonics, ctx.pairs
        want_x = ctx.needs_input_grad[0]
        blocks = layer.blocks(x)
        grads = [g.contiguous() for g in torch.split(grad, layer.widths, dim=1)]
        g_blocks = [torch.zeros_like(b) for b in blocks]
        g_Y, g_r = torch.zeros_like(Y), Y.new_empty(len(Y))
        for c in pairs.chunks():
            g_w = [None] * len(layer.paths)
            for sender, receiver, y, reverse in _directions(pairs, c, Y[c], harmonics):
                xs = [
                    b.index_select(0, sender).view(len(sender), d, mul)
                    for b, (_, mul, d) in zip(blocks, layer.in_blocks)
                ]
                g_xs = [None] * len(blocks)
                for p, (path, g, columns) in enumerate(zip(layer.paths, grads, layer.columns)):
                    gw, gx, gy = path.backward(xs[path.block], W[c, columns], y, g.index_select(0, receiver), want_x)
                    g_w[p] = gw if g_w[p] is None else g_w[p].add_(gw)
                    if gx is not None:
                        g_xs[path.block] = gx if g_xs[path.block] is None else g_xs[path.block] + gx
                    if gy is not None:
                        g_Y[c, path.y] += gy * harmonics.parity[path.y] if reverse else gy
                for g_block, gx in zip(g_blocks, g_xs):
                    if gx is not None:
                        g_block.index_add_(0, sender, gx.flatten(1))
            torch.linalg.vecdot(torch.cat(g_w, dim=1), S[c], out=g_r[c])
        g_r *= 1.0 / layer.table.step  # the slopes are per unit t
        return torch.cat(g_blocks, dim=1) if want_x else None, g_Y, g_r, None, None, None, None, None


def _dense(function, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(matrix (dim, out), bias (out,)) of an affine map of row vectors, read off in float64."""
    with torch.no_grad():
        bias = function(torch.zeros(1, dim, dtype=torch.float64))
        return function(torch.eye(dim, dtype=torch.float64)) - bias, bias[0]


def _columns(index: torch.Tensor):
    """A slice for a contiguous run of column numbers, else the numbers themselves."""
    if len(index) and torch.equal(index, torch.arange(int(index[0]), int(index[0]) + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index


class _NodeLayer:
    """The node part of one Interaction as dense matrices read off its e3nn maps (exact: they are linear):
    features -> the tabulated layer's component-major inputs, message sums + self-connection -> gate
    inputs; then the gate (its own activations, the gated irreps times their gates) and the residual."""

    def __init__(self, block: Interaction, layer: _TabulatedLayer, dtype):
        block = copy.deepcopy(block).double()
        width = sum(layer.widths)
        self.A_in, self.b_in = (
            t.to(dtype) for t in _dense(lambda h: layer.pack(block.linear_in(h)), block.irreps_in.dim)
        )
        A_out, b_out = _dense(lambda s: block.linear_out(layer.unpack(s)), width)
        A_self, b_self = _dense(block.self_connection, block.irreps_in.dim)
        self.A_out, self.A_self, self.b = A_out.to(dtype), A_self.to(dtype), (b_out + b_self).to(dtype)
        gate = block.gate
        parts = gate.sc(torch.eye(gate.irreps_in.dim, dtype=torch.float64))
        self.scalars, self.gates, self.gated = (_columns(part.argmax(0)) for part in parts)
        self.act_scalars, self.act_gates = gate.act_scalars.to(dtype), gate.act_gates.to(dtype)
        self.gated_irreps = [(mul, ir.dim) for mul, ir in gate.irreps_gated]
        self.has_gates = gate.irreps_gates.dim > 0
        self.residual, self.kept = block.residual, None

    def keep_scalars(self) -> int:
        """Compute only the scalar outputs (the gate puts them first), for a last layer whose readout sees
        nothing else; returns their number."""
        n = self.A_out[:, self.scalars].shape[1]
        self.A_out, self.A_self, self.b = (t[..., self.scalars].contiguous() for t in (self.A_out, self.A_self, self.b))
        self.scalars, self.has_gates, self.kept = slice(None), False, n
        return n

    def inputs(self, h: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_in, h, self.A_in)

    def self_term(self, h: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b, h, self.A_self)

    def __call__(self, h, summed, self_term) -> torch.Tensor:
        pre = torch.addmm(self_term, summed, self.A_out)
        out = self.act_scalars(pre[:, self.scalars])
        if self.has_gates:
            gates, gated, blocks = self.act_gates(pre[:, self.gates]), pre[:, self.gated], [out]
            start = column = 0
            for mul, dim in self.gated_irreps:
                part = gated[:, column : column + mul * dim].reshape(len(h), mul, dim)
                blocks.append((part * gates[:, start : start + mul, None]).flatten(1))
                start, column = start + mul, column + mul * dim
            out = torch.cat(blocks, dim=1)
        if not self.residual:
            return out
        return (h if self.kept is None else h[:, : self.kept]) + out


class TabulatedNequIP:
    """A trained NequIP's energy for inference, with each radial MLP (times the cutoff envelope)
    tabulated per bond class as a cubic Hermite spline of r on `intervals` intervals of [0, cutoff]: the
    per-edge MLPs were most of the model's arithmetic. The spline and its derivative are continuous and
    differentiated exactly, so forces stay -dE/dr of a smooth energy, and pairs at or beyond the cutoff
    get exactly zero weight (a neighbour list with a skin may hold them). It works on a half neighbour
    list (each pair once: its geometry and radial weights serve both directions), in chunks with a
    hand-written backward (first derivatives only: not for training), so per-edge intermediates never
    outlive a chunk. The node part (linear maps, self-connection, readout) runs as dense matrices read off
    the model's e3nn maps; the embedding, gates, per-type scale/shift and walls are the model's own.
    Holds the model, never changes it; nothing of it is saved."""

    def __init__(self, model: NequIP, intervals: int = 2048, chunk: int = 8192):
        dtype = model.type_scale.dtype
        self.model = model  # its embedding, activations, scale/shift and walls (none depends on train/eval)
        self.intervals, self.chunk, self.cutoff = int(intervals), int(chunk), model.cutoff
        self.harmonics = _Harmonics(model.irreps_sh, dtype)
        blocks = list(model.interactions)
        self.layers = [_TabulatedLayer(model, b, b is blocks[-1], self.intervals, dtype) for b in blocks]
        self.nodes = [_NodeLayer(b, layer, dtype) for b, layer in zip(blocks, self.layers)]
        readout = copy.deepcopy(model.readout[0]).double()
        R, self.b_readout = (t.to(dtype) for t in _dense(readout, readout.irreps_in.dim))
        scalars = self.nodes[-1].keep_scalars()
        if R[scalars:].any():
            raise ValueError("the readout sees more than the scalars the last layer's gate puts first")
        self.R = R[:scalars].contiguous()

    @torch.no_grad()
    def atoms(self, x: torch.Tensor) -> dict:
        """What depends on the atoms' types only, computed once per system: embedding, the first layer's
        inputs and self-connection, per-atom scale and shift, and the type rows of the walls."""
        model = self.model
        x = x.to(model.type_scale.dtype)
        h = model.embedding(x)
        scale, shift = model._per_atom_scale_shift(x)
        row, known = model.type_rows(x)
        first = self.nodes[0]
        return {
            "h": h,
            "x": first.inputs(h),
            "self": first.self_term(h),
            "scale": scale.contiguous(),
            "shift": shift.sum(),
            "shifts": shift.contiguous(),  # per atom
            "row": row,
            "known": known,
            "features": x,
        }

    def pairs(self, i, j, pair_class, shift_vectors, weight=None) -> Pairs:
        """The pairs of a force call, their bond classes as the model sees them (model_class_ids)."""
        pair_class = model_class_ids(pair_class, self.model.n_edge_classes)
        return Pairs(i, j, pair_class, shift_vectors, self.layers[0].table.rows_per_class, self.chunk, weight)

    def energy(self, atoms: dict, pos: torch.Tensor, pairs: Pairs, strain: torch.Tensor | None = None) -> torch.Tensor:
        """Total energy (kcal/mol, 0-dim) of the network (walls apart) for positions `pos` (N, 3). Its
        gradient with respect to `strain` (a zero (3, 3) tensor that requires grad) is minus the virial."""
        h = atoms["h"]
        strain = pos.new_zeros(3, 3) if strain is None else strain
        r, Y = _Geometry.apply(pos, strain, self.harmonics, pairs)
        weights = _radial_weights(self.layers, r, pairs)
        for k, (layer, node, (W, S)) in enumerate(zip(self.layers, self.nodes, weights)):
            x, self_term = (atoms["x"], atoms["self"]) if k == 0 else (node.inputs(h), node.self_term(h))
            h = node(h, _Convolution.apply(x, Y, r, layer, self.harmonics, pairs, W, S), self_term)
        e = self.model.readout[1:](torch.addmm(self.b_readout, h, self.R)).squeeze(-1)
        energy = (e * atoms["scale"]).sum() + atoms["shift"]
        if self.model.repulsion > 0:  # each pair once
            nonbonded = (pairs.pair_class == NONBONDED).to(r.dtype)
            features = atoms["features"]
            prior = repulsion_energy(self.model.repulsion, features[pairs.i], features[pairs.j], r, nonbonded,
                                     self.cutoff, self.model.envelope_p)  # fmt: skip
            energy = energy + (prior.sum() if pairs.weight is None else prior @ pairs.weight)
        return energy

    def wall_radii(self, atoms: dict, i, j, pair_class) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(core, stretch) wall radii (P, 2) of each pair seen from i and from j (0: none), or None when the
        model has no walls."""
        model = self.model
        if not (model.core_strength > 0 and int(model.n_types) > 0):
            return None
        row, known = atoms["row"], atoms["known"]
        fitted = (known[i] & known[j]).to(model.core_radius.dtype)[:, None]
        pair_class = model_class_ids(pair_class, model.n_edge_classes)
        index = (torch.stack([row[i], row[j]], 1), torch.stack([row[j], row[i]], 1), pair_class[:, None])
        return model.core_radius[index] * fitted, model.stretch_radius[index] * fitted

    def walls_within_reach(self, atoms: dict, i, j, pair_class, distances: torch.Tensor, reach: float):
        """(pair numbers, core radii, stretch radii) of the pairs whose walls can act while each pair's
        distance stays within `reach` of `distances` (a neighbour list's distances at its build, `reach`
        its skin: nothing else can reach a wall before the next build); None if the model has no walls."""
        radii = self.wall_radii(atoms, i, j, pair_class)
        if radii is None:
            return None
        core, stretch = radii
        distance = distances[:, None]
        maybe = ((distance - reach < core) | ((stretch > 0) & (distance + reach > stretch))).any(dim=1)
        near = torch.nonzero(maybe).squeeze(1)
        return near, core[near], stretch[near]

    def wall_energy(self, r: torch.Tensor, core: torch.Tensor, stretch: torch.Tensor, weight=None) -> torch.Tensor:
        """Total wall energy of pairs at distances r, half from each end (pairs at or beyond the cutoff have
        none: they are not in a graph of the model's cutoff), each pair's times its `weight` if given."""
        pair = priors.wall_terms(core, stretch, r[:, None]).sum(1)
        pair = 0.5 * self.model.core_strength * torch.where(r < self.cutoff, pair, torch.zeros_like(pair))
        return pair.sum() if weight is None else pair @ weight
