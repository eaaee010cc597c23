"""NequIP-style equivariant energy model on e3nn: E = sum_i E_i, F = -dE/dr by autograd.

Forces are then conservative and exactly E(3)-equivariant, and the smooth polynomial cutoff envelope
makes the energy (and its first two derivatives) continuous as pairs enter or leave the neighbour list,
which is what energy-conserving MD needs.

Atoms are embedded from their physical parameters (q, epsilon, sigma), not a species index, so the model
applies to any system. Each interaction block: linear mix -> channel-wise ("uvu") tensor product of the
neighbours' features with the spherical harmonics of the edge direction, its weights given per edge by a
radial MLP of (Bessel basis, bond-class one-hot) times the cutoff envelope -> sum over neighbours divided
by sqrt(mean neighbour count) -> linear + self-connection -> gate non-linearity -> residual. The uvu
product with radial weights is ~15x cheaper on CPU than a fully connected one (docs/design.md).

E_i = scale_t * e_i + shift_t with per-type scale (force RMS of the type) and shift (least squares on the
energies), fitted once from training data by `fit_scale_shift`; a type is identified by its (q, eps,
sigma), and a type never fitted uses the global `force_scale` / `energy_shift` buffers.

A network knows nothing about distances its training data never reached: a water model's O-H bond force
turns attractive below ~0.6 A, so one rare compression in MD collapses a molecule, and beyond the longest
bond it saw nothing holds the H, so it drifts off. `fit_walls` (part of `fit_scale_shift`, priors.py) records, per
(type, type, bond class), the shortest and longest distance in the training frames; below `core_margin`
times the shortest a stiff wall k (r_c - r)^3 (`core_strength` k) pushes apart, and for pairs of one molecule
(bonded, 1-3) beyond the longest divided by `core_margin` a wall k (r - r_s)^3 pulls together. The walls
are exactly zero wherever the training data lies, so they do not change what the network learns, and
fitting them onto a trained model (`gnnmd walls`) gives the model training with them would have.

For inference, gnnmd.inference.tabulated_nequip gives the same energy in a faster and leaner form
(TabulatedNequIP, used by the force function MD calls, gnnmd.inference.ModelForces): the radial MLPs, whose inputs are only the
distance and the bond class, become cubic splines of r per bond class (forces within ~1e-5 kcal/mol/A
of the network's with 2048 intervals), the edges a half neighbour list processed in chunks with a
hand-written backward, and the node maps dense matrices. Training and evaluation use the model itself."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from gnnmd.data.graphs import N_BOND_CLASSES, NONBONDED, model_onehot
from gnnmd.data.topology import N_NODE_FEATURES, TYPE_MATCH_TOLERANCE
from gnnmd.models import priors
from gnnmd.models.base import ForceModel
from gnnmd.models.layers import graph_index
from gnnmd.models.priors import MAX_TYPES


class BesselBasis(nn.Module):
    """sqrt(2/rc) sin(n pi r / rc) / r, n = 1..N: the radial basis of NequIP / DimeNet."""

    def __init__(self, cutoff: float, n: int = 8):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("frequencies", torch.arange(1, n + 1, dtype=torch.get_default_dtype()) * math.pi)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = r[:, None] / self.cutoff
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.frequencies * x) / r[:, None]


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """1 at r=0, and the value and first two derivatives vanish at the cutoff (NequIP's p=6 polynomial);
    exactly 0 beyond it."""
    x = r / cutoff
    u = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return torch.where(x < 1.0, u, torch.zeros_like(u))


def repulsion_energy(strength: float, x_i, x_j, r, nonbonded, cutoff: float, p: int = 6) -> torch.Tensor:
    """Per-pair energy of the repulsion prior: strength * 4 eps_ij (sigma_ij / r)^12 for pairs of different
    molecules (`nonbonded`, 0/1), with Lorentz-Berthelot eps_ij, sigma_ij from the atoms' node features
    (q, eps, sigma), times the cutoff envelope (smooth to zero at the cutoff). The model learns the rest."""
    epsilon = torch.sqrt(torch.clamp(x_i[:, 1], min=0) * torch.clamp(x_j[:, 1], min=0))
    sigma = 0.5 * (x_i[:, 2] + x_j[:, 2])
    scale = 4.0 * strength * epsilon * nonbonded
    return scale * (sigma / r) ** 12 * polynomial_envelope(r, cutoff, p)


class Interaction(nn.Module):
    """One NequIP convolution with gate and residual; see the module docstring."""

    def __init__(self, irreps_in, irreps_sh, target, n_edge_features: int, radial_hidden: int):
        super().__init__()
        irreps_in, irreps_sh, target = o3.Irreps(irreps_in), o3.Irreps(irreps_sh), o3.Irreps(target)
        self.irreps_in = irreps_in
        self.linear_in = o3.Linear(irreps_in, irreps_in)

        # channel-wise products: every (input irrep, harmonic) pair feeding an irrep of the target
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in target:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        mid = o3.Irreps(mid)
        mid, permutation, _ = mid.sort()
        instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
        self.tp = o3.TensorProduct(
            irreps_in, irreps_sh, mid, instructions, shared_weights=False, internal_weights=False
        )
        self.radial = FullyConnectedNet(
            [n_edge_features, radial_hidden, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu
        )

        reachable = {ir for _, ir in mid}
        scalars = o3.Irreps([(mul, ir) for mul, ir in target if ir.l == 0 and ir in reachable])
        gated = o3.Irreps([(mul, ir) for mul, ir in target if ir.l > 0 and ir in reachable])
        self.gate = Gate(
            scalars,
            [torch.nn.functional.silu] * len(scalars),
            o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps(""),
            [torch.sigmoid] if gated.num_irreps else [],
            gated,
        )
        self.linear_out = o3.Linear(mid.simplify(), self.gate.irreps_in)
        self.self_connection = o3.Linear(irreps_in, self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out
        self.residual = self.irreps_out == irreps_in

    def forward(self, h, sh, edge_features, envelope, sender, receiver, norm: float):
        weights = self.radial(edge_features) * envelope[:, None]
        messages = self.tp(self.linear_in(h)[sender], sh, weights)
        summed = torch.zeros(h.shape[0], messages.shape[1], dtype=messages.dtype, device=messages.device)
        summed = summed.index_add_(0, receiver, messages) / norm
        out = self.gate(self.linear_out(summed) + self.self_connection(h))
        return h + out if self.residual else out


class NequIP(ForceModel):
    """E(3)-equivariant energy model; forces by autograd through positions and periodic shifts.

    Hyper-parameters: channels (multiplicity of every irrep), l_max (1 or 2), layers (interaction
    blocks), cutoff (A; the graphs must be built with at least this cutoff), n_basis (Bessel functions),
    radial_hidden (radial MLP width), envelope_p (cutoff polynomial order), core_strength (kcal/mol/A^3
    of the walls outside the training data's distances; 0 turns them off), core_margin (the walls start
    at this fraction of each shortest distance and at each longest one divided by it), repulsion (strength of
    a physical prior inside the energy, 4 eps_ij (sigma_ij / r)^12 between molecules, as NequIP adds ZBL: a
    repulsion that holds where no training frame reaches; 0 turns it off)."""

    family = "nequip"
    equivariant = True
    needs_grad = True
    predicts_virial = True
    freeze_groups: dict[str, tuple[str, ...]] = {
        "embedding": ("embedding",),
        "interactions": ("interactions",),
        "readout": ("readout",),
    }
    cutoff_buffers = ("avg_num_neighbors",)  # 0 = refitted on the new graphs by fit_scale_shift

    def __init__(
        self,
        channels: int = 32,
        l_max: int = 1,
        layers: int = 3,
        cutoff: float = 5.0,
        n_basis: int = 8,
        radial_hidden: int = 64,
        envelope_p: int = 6,
        core_strength: float = 1000.0,
        core_margin: float = 0.9,
        repulsion: float = 0.0,
        edge_classes: int = N_BOND_CLASSES,
    ):
        if l_max not in (1, 2):
            raise ValueError(f"l_max must be 1 or 2, got {l_max}")
        if layers < 1 or channels < 1 or cutoff <= 0:
            raise ValueError("layers and channels must be positive and cutoff > 0")
        super().__init__(
            channels=channels,
            l_max=l_max,
            layers=layers,
            cutoff=float(cutoff),
            n_basis=n_basis,
            radial_hidden=radial_hidden,
            envelope_p=envelope_p,
            core_strength=float(core_strength),
            core_margin=float(core_margin),
            repulsion=float(repulsion),
            edge_classes=int(edge_classes),
        )
        self.envelope_p = int(envelope_p)
        self.embedding = nn.Sequential(nn.Linear(N_NODE_FEATURES, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.basis = BesselBasis(cutoff, n_basis)
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        # features of parity (-1)^l only: what products of scalars with harmonics reach
        target = o3.Irreps([(channels, (degree, (-1) ** degree)) for degree in range(l_max + 1)])
        irreps = o3.Irreps(f"{channels}x0e")
        blocks = []
        for _ in range(layers):
            block = Interaction(irreps, self.irreps_sh, target, n_basis + self.n_edge_classes, radial_hidden)
            blocks.append(block)
            irreps = block.irreps_out
        self.interactions = nn.ModuleList(blocks)
        self.readout = nn.Sequential(
            o3.Linear(irreps, f"{max(channels // 2, 1)}x0e"), nn.SiLU(), nn.Linear(max(channels // 2, 1), 1)
        )
        # normalisation fitted from training data (fit_scale_shift); 0 = not fitted yet
        self.register_buffer("avg_num_neighbors", torch.tensor(0.0))
        self.register_buffer("n_types", torch.tensor(0, dtype=torch.long))
        self.register_buffer("type_keys", torch.zeros(MAX_TYPES, N_NODE_FEATURES))
        self.register_buffer("type_scale", torch.ones(MAX_TYPES))
        self.register_buffer("type_shift", torch.zeros(MAX_TYPES))
        # wall radii per (receiver type, sender type, bond class); 0 = no wall
        self.register_buffer("core_radius", torch.zeros(MAX_TYPES, MAX_TYPES, self.n_edge_classes))
        self.register_buffer("stretch_radius", torch.zeros(MAX_TYPES, MAX_TYPES, self.n_edge_classes))

    @property
    def core_strength(self) -> float:
        return float(self.hyper["core_strength"])

    @property
    def repulsion(self) -> float:
        """Strength of the repulsion prior (repulsion_energy); 0: none."""
        return float(self.hyper.get("repulsion", 0.0))

    @property
    def core_margin(self) -> float:
        return float(self.hyper["core_margin"])

    # ----------------------------------------------------------------------------------------------
    def type_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row of each atom's type in the fitted table, matched on (q, eps, sigma), and whether it is known."""
        n = int(self.n_types)
        if n == 0:
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device), torch.zeros_like(
                x[:, 0], dtype=torch.bool
            )
        distance = (x[:, None, :] - self.type_keys[None, :n, :].to(x.dtype)).abs().amax(dim=-1)
        best, row = distance.min(dim=1)
        return row, best < TYPE_MATCH_TOLERANCE

    def _per_atom_scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and shift of each atom's type; the globals for types never fitted."""
        scale = self.force_scale.expand(x.shape[0])
        shift = self.energy_shift.expand(x.shape[0])
        if int(self.n_types) == 0:
            return scale, shift
        row, known = self.type_rows(x)
        return torch.where(known, self.type_scale[row], scale), torch.where(known, self.type_shift[row], shift)

    def core_energies(self, x, edge_onehot, r, sender, receiver) -> torch.Tensor:
        """Per-atom energy of the walls (half of each pair's on either end of a full neighbour list): exactly
        zero for pairs between their two wall radii and for types never fitted."""
        row, known = self.type_rows(x)
        index = (row[receiver], row[sender], edge_onehot.argmax(dim=1))
        fitted = (known[receiver] & known[sender]).to(r.dtype)
        core = self.core_radius[index].to(r.dtype) * fitted
        stretch = self.stretch_radius[index].to(r.dtype) * fitted
        pair = 0.5 * self.core_strength * priors.wall_terms(core, stretch, r)
        return torch.zeros(x.shape[0], dtype=r.dtype, device=r.device).index_add(0, receiver, pair)

    def atomic_energies(self, x, edge_onehot, vectors, sender, receiver) -> torch.Tensor:
        """E_i (kcal/mol) from node features and edge vectors r_j - r_i (+ shift)."""
        r = torch.linalg.norm(vectors, dim=1)
        envelope = polynomial_envelope(r, self.cutoff, self.envelope_p)
        edge_features = torch.cat([self.basis(r), edge_onehot], dim=1)
        sh = self.spherical_harmonics(vectors)
        norm = math.sqrt(float(self.avg_num_neighbors)) if float(self.avg_num_neighbors) > 0 else 1.0
        h = self.embedding(x)
        for block in self.interactions:
            h = block(h, sh, edge_features, envelope, sender, receiver, norm)
        e = self.readout(h).squeeze(-1)
        scale, shift = self._per_atom_scale_shift(x)
        energies = scale * e + shift
        if self.core_strength > 0 and int(self.n_types) > 0:
            energies = energies + self.core_energies(x, edge_onehot, r, sender, receiver)
        if self.repulsion > 0:  # half of each pair's on either end of a full neighbour list
            pair = repulsion_energy(self.repulsion, x[receiver], x[sender], r, edge_onehot[:, NONBONDED],
                                    self.cutoff, self.envelope_p)  # fmt: skip
            energies = energies.index_add(0, receiver, 0.5 * pair)
        return energies

    def forward(self, batch, virial: bool = False) -> dict:
        """{"energy": (B,) kcal/mol, "forces": (N, 3) kcal/mol/A}. Edge vectors are rebuilt from positions
        (pos[j] - pos[i] + shift @ cell) so the gradient flows through them. In training mode (with
        grad enabled) the forces keep their graph, so a force loss can be trained; in eval mode or under
        torch.no_grad they are computed without one (cheaper validation and MD).

        With `virial`, also "virial" (B, 3, 3) kcal/mol: minus the derivative of each graph's energy under a
        strain of its positions and cell rows alike (r -> r (I + strain)), symmetrised, the convention of
        the inference engine (gnnmd.inference.forces) and of LAMMPS. It comes from the same autograd pass
        as the forces (with its graph in training, so a virial loss trains); without it nothing is strained."""
        create_graph = self.training and torch.is_grad_enabled()
        dtype = self.type_scale.dtype
        graph = graph_index(batch)
        n_graphs = int(getattr(batch, "num_graphs", 0) or (int(graph.max()) + 1 if graph.numel() else 1))
        with torch.enable_grad():
            pos = batch.pos.detach().to(dtype).requires_grad_(True)
            cell = batch.cell.to(dtype).reshape(-1, 3, 3)
            inputs = [pos]
            if virial:  # a zero strain per graph, applied before any edge vector or pair term is built
                strain = pos.new_zeros(n_graphs, 3, 3, requires_grad=True)
                deformation = torch.eye(3, dtype=dtype, device=pos.device) + strain
                energy = self.graph_energies(batch, torch.einsum("ni,nij->nj", pos, deformation[graph]),
                                             cell @ deformation, graph, n_graphs)  # fmt: skip
                inputs.append(strain)
            else:
                energy = self.graph_energies(batch, pos, cell, graph, n_graphs)
            grads = [None] * len(inputs)
            if energy.requires_grad:  # not when nothing depends on positions or parameters
                grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
        if not create_graph:
            energy = energy.detach()
        forces = torch.zeros_like(pos) if grads[0] is None else -grads[0]  # no edges: isolated atoms feel none
        out = {"energy": energy, "forces": forces}
        if virial:
            derivative = torch.zeros_like(strain) if grads[1] is None else grads[1]
            out["virial"] = -0.5 * (derivative + derivative.transpose(1, 2))
        return out

    def graph_energies(self, batch, pos, cell, graph, n_graphs: int) -> torch.Tensor:
        """Energy (B,) kcal/mol of each graph for these positions and cells (rows: lattice vectors)."""
        sender, receiver = batch.edge_index[0], batch.edge_index[1]
        dtype = pos.dtype
        shifts = torch.einsum("ek,ekl->el", batch.edge_shift.to(dtype), cell[graph[receiver]])
        vectors = pos[sender] - pos[receiver] + shifts
        energies = self.atomic_energies(
            batch.x.to(dtype), model_onehot(batch.edge_attr, self.n_edge_classes).to(dtype), vectors, sender, receiver
        )
        pairs = self.pair_energies(batch, pos, cell, graph)
        if pairs is not None:
            energies = energies + pairs
        return torch.zeros(n_graphs, dtype=dtype, device=pos.device).index_add(0, graph, energies)

    def pair_energies(self, batch, pos, cell, graph) -> torch.Tensor | None:
        """Per-atom energies of terms beyond the graph (gnnmd.models.states); None: none."""
        return None

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Checkpoints from before the walls load without them (radius 0)."""
        state = dict(state_dict)
        state.setdefault("core_radius", torch.zeros_like(self.core_radius))
        state.setdefault("stretch_radius", torch.zeros_like(self.stretch_radius))
        return super().load_state_dict(state, strict, **kwargs)

    # ----------------------------------------------------------------------------------------------
    def fit_priors(self, frames, coulomb=None, indices=None) -> dict:
        return self.fit_scale_shift(frames, coulomb, indices)

    def fit_scale_shift(self, frames, coulomb=None, indices=None, neighbour_frames: int = 20) -> dict:
        """Fit the per-type scale/shift, the walls and the neighbour count from training frames (priors.py)."""
        return priors.fit_scale_shift(self, frames, coulomb, indices, neighbour_frames)

    def fit_walls(self, frames, strength: float | None = None, margin: float | None = None) -> dict:
        """Refit only the walls onto this trained model (priors.py)."""
        return priors.fit_walls(self, frames, strength, margin)
