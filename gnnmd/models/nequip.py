"""NequIP-style equivariant energy model on e3nn: E = sum_i E_i, F = -dE/dr by autograd.

Forces are then conservative and exactly E(3)-equivariant, and the smooth polynomial cutoff envelope
makes the energy (and its first two derivatives) continuous as pairs enter or leave the neighbour list,
which is what energy-conserving MD needs.

Atoms are embedded from their physical parameters (q, epsilon, sigma), not a species index, so the model
applies to any system. Each interaction block: linear mix -> channel-wise ("uvu") tensor product of the
neighbours' features with the spherical harmonics of the edge direction, its weights given per edge by a
radial MLP of (Bessel basis, bond-class one-hot) times the cutoff envelope -> sum over neighbours divided
by sqrt(mean neighbour count) -> linear + self-connection -> gate non-linearity -> residual. The uvu
product with radial weights is ~15x cheaper on CPU than a fully connected one (DESIGN.md).

E_i = scale_t * e_i + shift_t with per-type scale (force RMS of the type) and shift (least squares on the
energies), fitted once from training data by `fit_scale_shift`; a type is identified by its (q, eps,
sigma), and a type never fitted uses the global `force_scale` / `energy_shift` buffers.

A network knows nothing about distances its training data never reached: a water model's O-H bond force
turns attractive below ~0.6 A, so one rare compression in MD collapses a molecule, and beyond the longest
bond it saw nothing holds the H, so it drifts off. `fit_walls` (part of `fit_scale_shift`) records, per
(type, type, bond class), the shortest and longest distance in the training frames; below `core_margin`
times the shortest a stiff wall k (r_c - r)^3 (`core_strength` k) pushes apart, and for pairs of one molecule
(bonded, 1-3) beyond the longest divided by `core_margin` a wall k (r - r_s)^3 pulls together. The walls
are exactly zero wherever the training data lies, so they do not change what the network learns, and
fitting them onto a trained model (`gnnmd walls`) gives the model training with them would have."""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from gnnmd.models.layers import ForceModel, graph_index

MAX_TYPES = 16  # capacity of the per-type scale/shift table (fixed, so checkpoints load into a fresh model)
TYPE_MATCH_TOLERANCE = 1e-4  # |(q, eps, sigma) - key| below this is the same type
N_BOND_CLASSES = 3  # other molecule, bonded, 1-3 (the edge one-hot)


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
    at this fraction of each shortest distance and at each longest one divided by it)."""

    family = "nequip"
    equivariant = True
    needs_grad = True
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
        )
        self.cutoff = float(cutoff)
        self.core_strength = float(core_strength)
        self.core_margin = float(core_margin)
        self.envelope_p = int(envelope_p)
        self.embedding = nn.Sequential(nn.Linear(3, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.basis = BesselBasis(cutoff, n_basis)
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        # features of parity (-1)^l only: what products of scalars with harmonics reach
        target = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(l_max + 1)])
        irreps = o3.Irreps(f"{channels}x0e")
        blocks = []
        for _ in range(layers):
            block = Interaction(irreps, self.irreps_sh, target, n_basis + 3, radial_hidden)
            blocks.append(block)
            irreps = block.irreps_out
        self.interactions = nn.ModuleList(blocks)
        self.readout = nn.Sequential(
            o3.Linear(irreps, f"{max(channels // 2, 1)}x0e"), nn.SiLU(), nn.Linear(max(channels // 2, 1), 1)
        )
        # normalisation fitted from training data (fit_scale_shift); 0 = not fitted yet
        self.register_buffer("avg_num_neighbors", torch.tensor(0.0))
        self.register_buffer("n_types", torch.tensor(0, dtype=torch.long))
        self.register_buffer("type_keys", torch.zeros(MAX_TYPES, 3))
        self.register_buffer("type_scale", torch.ones(MAX_TYPES))
        self.register_buffer("type_shift", torch.zeros(MAX_TYPES))
        # wall radii per (receiver type, sender type, bond class); 0 = no wall
        self.register_buffer("core_radius", torch.zeros(MAX_TYPES, MAX_TYPES, N_BOND_CLASSES))
        self.register_buffer("stretch_radius", torch.zeros(MAX_TYPES, MAX_TYPES, N_BOND_CLASSES))

    # ----------------------------------------------------------------------------------------------
    def _type_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row of each atom's type in the fitted table, matched on (q, eps, sigma), and whether it is known."""
        n = int(self.n_types)
        if n == 0:
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device), torch.zeros_like(x[:, 0], dtype=torch.bool)
        distance = (x[:, None, :] - self.type_keys[None, :n, :].to(x.dtype)).abs().amax(dim=-1)
        best, row = distance.min(dim=1)
        return row, best < TYPE_MATCH_TOLERANCE

    def _per_atom_scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and shift of each atom's type; the globals for types never fitted."""
        scale = self.force_scale.expand(x.shape[0])
        shift = self.energy_shift.expand(x.shape[0])
        if int(self.n_types) == 0:
            return scale, shift
        row, known = self._type_rows(x)
        return torch.where(known, self.type_scale[row], scale), torch.where(known, self.type_shift[row], shift)

    def core_energies(self, x, edge_onehot, r, sender, receiver) -> torch.Tensor:
        """Per-atom energy of the walls (half of each pair's on either end of a full neighbour list): exactly
        zero for pairs between their two wall radii and for types never fitted."""
        row, known = self._type_rows(x)
        index = (row[receiver], row[sender], edge_onehot.argmax(dim=1))
        fitted = (known[receiver] & known[sender]).to(r.dtype)
        core = self.core_radius[index].to(r.dtype) * fitted
        stretch = self.stretch_radius[index].to(r.dtype)
        stretched = torch.where((stretch > 0) & (fitted > 0), torch.relu(r - stretch), torch.zeros_like(r))
        pair = 0.5 * self.core_strength * (torch.relu(core - r) ** 3 + stretched**3)
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
        return energies

    def forward(self, batch) -> dict:
        """{"energy": (B,) kcal/mol, "forces": (N, 3) kcal/mol/A}. Edge vectors are rebuilt from positions
        (pos[j] - pos[i] + shift @ cell) so the gradient flows through them. In training mode (with
        grad enabled) the forces keep their graph, so a force loss can be trained; in eval mode or under
        torch.no_grad they are computed without one (cheaper validation and MD)."""
        create_graph = self.training and torch.is_grad_enabled()
        dtype = self.type_scale.dtype
        sender, receiver = batch.edge_index[0], batch.edge_index[1]
        graph = graph_index(batch)
        n_graphs = int(getattr(batch, "num_graphs", 0) or (int(graph.max()) + 1 if graph.numel() else 1))
        with torch.enable_grad():
            pos = batch.pos.detach().to(dtype).requires_grad_(True)
            cell = batch.cell.to(dtype).reshape(-1, 3, 3)
            shifts = torch.einsum("ek,ekl->el", batch.edge_shift.to(dtype), cell[graph[receiver]])
            vectors = pos[sender] - pos[receiver] + shifts
            energies = self.atomic_energies(
                batch.x.to(dtype), batch.edge_attr[:, :3].to(dtype), vectors, sender, receiver
            )
            energy = torch.zeros(n_graphs, dtype=dtype, device=pos.device).index_add(0, graph, energies)
            grad = None
            if energy.requires_grad:  # not when nothing depends on positions or parameters
                (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph, allow_unused=True)
            if grad is None:  # no edges: isolated atoms feel no force
                grad = torch.zeros_like(pos)
        if not create_graph:
            energy = energy.detach()
        return {"energy": energy, "forces": -grad}

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Checkpoints from before the walls load without them (radius 0)."""
        state = dict(state_dict)
        state.setdefault("core_radius", torch.zeros_like(self.core_radius))
        state.setdefault("stretch_radius", torch.zeros_like(self.stretch_radius))
        return super().load_state_dict(state, strict, **kwargs)

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_scale_shift(self, data, coulomb=None, indices=None, neighbour_frames: int = 20) -> dict:
        """Fit the per-type scale (RMS force component of the type) and shift (least squares of frame
        energies on per-type atom counts, when energies exist; else 0), and the mean neighbour count if
        not fitted yet (so fine-tuning keeps the trained network's normalisation).

        `data`: a Frames object or an iterable of PyG batches (graphs with x, y, edge_index and maybe
        energy). `coulomb`: a CoulombCache whose part is subtracted first (the network learns the rest);
        with Frames it covers the same frames, with batches it is indexed by each graph's `frame`.
        `indices`: fit on these frames of a Frames object only (e.g. the training split; the cache then
        covers the whole Frames). Types already in the table and not in `data` are kept. Returns the
        fitted values."""
        if indices is not None:
            data = data.subset(indices)
            coulomb = None if coulomb is None else coulomb.subset(indices)
        if hasattr(data, "topology"):
            per_frame = self._frames_rows(data, coulomb, neighbour_frames)
        else:
            per_frame = self._batch_rows(data, coulomb)
        keys, sq_sum, n_comp, counts, energies, n_edges, n_nodes, (shortest, longest) = per_frame
        scale = np.sqrt(sq_sum / np.maximum(n_comp, 1))
        overall = math.sqrt(sq_sum.sum() / max(n_comp.sum(), 1))
        scale = np.where(scale > 1e-6 * max(overall, 1e-12), scale, overall)
        if energies is not None and len(energies):
            shift = np.linalg.lstsq(counts, energies, rcond=None)[0]
        else:
            shift = np.zeros(len(keys))
        if float(self.avg_num_neighbors) <= 0 and n_nodes > 0:
            self.avg_num_neighbors.fill_(max(n_edges / n_nodes, 1.0))
        rows = self._store_types(keys, scale, shift)
        self._set_walls(rows, shortest, longest)
        # the fallbacks for types not in the table: this data's overall values
        self.force_scale.fill_(overall)
        if energies is not None and len(energies):
            self.energy_shift.fill_(float(np.sum(energies) / counts.sum()))
        return {
            "type_keys": keys.tolist(),
            "type_scale": scale.tolist(),
            "type_shift": shift.tolist(),
            "avg_num_neighbors": float(self.avg_num_neighbors),
            "shortest_distances": np.where(np.isfinite(shortest), shortest, 0.0).tolist(),
            "longest_distances": np.where(np.isfinite(longest), longest, 0.0).tolist(),
        }

    def _set_walls(self, rows: list[int], shortest: np.ndarray, longest: np.ndarray) -> None:
        """Wall radii from the distance range of each (type, type, bond class); `rows`: table row of each key.
        Pairs of different molecules (class 0) get no stretch wall: they may part freely."""
        for a, b, c in zip(*np.nonzero(np.isfinite(shortest))):
            self.core_radius[rows[a], rows[b], c] = self.core_margin * float(shortest[a, b, c])
            if c > 0:
                self.stretch_radius[rows[a], rows[b], c] = float(longest[a, b, c]) / self.core_margin

    @torch.no_grad()
    def fit_walls(self, frames, strength: float | None = None, margin: float | None = None) -> dict:
        """Refit only the walls of a trained model from `frames` (its training data), optionally with a new
        strength and margin; the network and its normalisation stay as they are. Types not in the model's
        table are skipped; pairs not in `frames` keep the walls they had. Returns {"shortest_distances", "longest_distances"} per key in table order."""
        if strength is not None:
            self.core_strength = self.hyper["core_strength"] = float(strength)
        if margin is not None:
            if not 0 < margin <= 1:
                raise ValueError(f"the wall margin must be in (0, 1], got {margin}")
            self.core_margin = self.hyper["core_margin"] = float(margin)
        features = torch.as_tensor(frames.topology.node_features, dtype=self.type_keys.dtype)
        table_row, known = self._type_rows(features)
        if not bool(known.any()):
            raise ValueError("none of these frames' atom types is in the model's type table")
        # one key per table row, so the distance table is indexed by row (unknown types: a spare last row)
        inverse = np.where(known.numpy(), table_row.numpy(), MAX_TYPES)
        shortest, longest = _frames_distance_range(frames, inverse, MAX_TYPES + 1, self.cutoff)
        shortest, longest = shortest[:MAX_TYPES, :MAX_TYPES], longest[:MAX_TYPES, :MAX_TYPES]
        self._set_walls(list(range(MAX_TYPES)), shortest, longest)
        n = int(self.n_types)
        return {
            "shortest_distances": np.where(np.isfinite(shortest), shortest, 0.0)[:n, :n].tolist(),
            "longest_distances": np.where(np.isfinite(longest), longest, 0.0)[:n, :n].tolist(),
        }

    def _store_types(self, keys, scale, shift) -> list[int]:
        """Write each key's scale and shift into its table row (a new row for a new type); returns the rows."""
        n, rows = int(self.n_types), []
        for key, s, b in zip(keys, scale, shift):
            key_t = torch.as_tensor(key, dtype=self.type_keys.dtype)
            match = (self.type_keys[:n] - key_t).abs().amax(dim=-1) < TYPE_MATCH_TOLERANCE if n else torch.zeros(0)
            row = int(torch.nonzero(match)[0]) if match.any() else n
            if row == n:
                if n >= MAX_TYPES:
                    raise ValueError(f"more than {MAX_TYPES} atom types: raise MAX_TYPES in gnnmd/models/nequip.py")
                n += 1
            self.type_keys[row] = key_t
            self.type_scale[row] = float(s)
            self.type_shift[row] = float(b)
            rows.append(row)
        self.n_types.fill_(n)
        return rows

    def _frames_rows(self, frames, coulomb, neighbour_frames):
        from gnnmd.data import neighbor_list

        keys, inverse = np.unique(frames.topology.node_features.astype(np.float64), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        forces = frames.forces.astype(np.float64)
        energies = None if frames.energies is None else frames.energies.astype(np.float64)
        if coulomb is not None:
            forces = forces - coulomb.forces
            energies = None if energies is None else energies - coulomb.energies
        sq_sum = np.array([np.sum(forces[:, inverse == t] ** 2) for t in range(len(keys))])
        n_comp = np.array([forces[:, inverse == t].size for t in range(len(keys))], dtype=np.float64)
        counts = np.tile(np.bincount(inverse, minlength=len(keys)).astype(np.float64), (len(frames), 1))
        sample = np.unique(np.linspace(0, len(frames) - 1, min(neighbour_frames, len(frames))).astype(int))
        n_edges = sum(len(neighbor_list(frames.positions[k], frames.cells[k], self.cutoff)[0]) for k in sample)
        distances = _frames_distance_range(frames, inverse, len(keys), self.cutoff)
        n_nodes = float(len(sample) * frames.topology.n_atoms)
        return keys, sq_sum, n_comp, counts, energies, float(n_edges), n_nodes, distances

    def _batch_rows(self, batches, coulomb):
        xs, force_rows, graph_rows, energy_rows, n_edges, n_nodes, offset = [], [], [], [], 0, 0, 0
        edge_rows = []  # (receiver, sender) as indices into the concatenated atoms, and the edge attributes
        for batch in batches:
            edge_rows.append((batch.edge_index[1].numpy() + n_nodes, batch.edge_index[0].numpy() + n_nodes, batch.edge_attr))
            forces = batch.y.double()
            energy = getattr(batch, "energy", None)
            energy = None if energy is None else energy.double().reshape(-1)
            if coulomb is not None:
                cf, ce = coulomb.for_batch(batch)
                forces = forces - cf.double()
                energy = None if energy is None else energy - ce.double()
            graph = graph_index(batch)
            xs.append(batch.x.double().cpu().numpy())
            force_rows.append(forces.cpu().numpy())
            graph_rows.append(graph.cpu().numpy() + offset)
            energy_rows.append(None if energy is None else energy.cpu().numpy())
            offset += int(getattr(batch, "num_graphs", 1) or 1)
            n_edges += batch.edge_index.shape[1]
            n_nodes += batch.num_nodes
        x = np.concatenate(xs)
        forces = np.concatenate(force_rows)
        graph = np.concatenate(graph_rows)
        keys, inverse = np.unique(x, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        sq_sum = np.array([np.sum(forces[inverse == t] ** 2) for t in range(len(keys))])
        n_comp = np.array([forces[inverse == t].size for t in range(len(keys))], dtype=np.float64)
        counts = np.zeros((offset, len(keys)))
        np.add.at(counts, (graph, inverse), 1.0)
        energies = None if any(e is None for e in energy_rows) else np.concatenate(energy_rows)
        distances = _distance_range([(inverse[r], inverse[s], a) for r, s, a in edge_rows], len(keys))
        return keys, sq_sum, n_comp, counts, energies, float(n_edges), float(n_nodes), distances


def _frames_distance_range(frames, inverse: np.ndarray, n_keys: int, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """_distance_range over the graphs of every frame; `inverse`: each atom's key."""
    from gnnmd.data.graphs import GraphBuilder

    builder = GraphBuilder(frames.topology, cutoff)
    graphs = (builder(frames.positions[k], frames.cells[k]) for k in range(len(frames)))
    edge_sets = ((inverse[g.edge_index[1].numpy()], inverse[g.edge_index[0].numpy()], g.edge_attr) for g in graphs)
    return _distance_range(edge_sets, n_keys)


def _distance_range(edge_sets, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """(shortest, longest) distance over all edges, each (n_keys, n_keys, bond classes); inf / -inf where no
    edge was seen. `edge_sets`: (receiver key, sender key, edge_attr) per graph; edge_attr = one-hot,
    distance, ..."""
    shortest = np.full((n_keys, n_keys, N_BOND_CLASSES), np.inf)
    longest = np.full((n_keys, n_keys, N_BOND_CLASSES), -np.inf)
    for receiver, sender, attr in edge_sets:
        attr = attr.detach().double().cpu().numpy()
        index = (receiver, sender, attr[:, :N_BOND_CLASSES].argmax(axis=1))
        np.minimum.at(shortest, index, attr[:, N_BOND_CLASSES])
        np.maximum.at(longest, index, attr[:, N_BOND_CLASSES])
    return shortest, longest
