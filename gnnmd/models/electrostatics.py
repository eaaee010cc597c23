"""Coulomb electrostatics of the node charges with torch-pme (particle-mesh Ewald), as a physics term
added to any model's energy and forces.

Intramolecular pairs are handled as LAMMPS' `special_bonds coul f12 f13 ...` does (SPC/Fw: 0.0 0.0 1.0):
an excluded pair is left out of the real-space neighbour list, and since the k-space sum still contains
its long-range part q_i q_j erf(r / (sqrt(2) smearing)) / r, that is replaced once by f * q_i q_j / r.

PME parameters (smearing, mesh spacing, interpolation order, real-space cutoff) are chosen once per
system from its charges and a representative cell, with torch-pme's error bounds (deterministic; no
timing-based tuning), so every frame is computed with the same, reproducible settings.

Physics only: training caches the Coulomb part of its frames (gnnmd.data.coulomb_cache) and learns the
rest; inference adds it back (gnnmd.inference.forces.WithCoulomb).

`real_space_cutoff` is PME's own real-space cutoff, unrelated to the model's graph cutoff.

`forward` (energy and forces, what inference and the Coulomb cache call) is the lean path: torch-pme's
k-space part with the density spread and the potential interpolated a chunk of atoms at a time and the
k-space kernel applied a slab of the mesh at a time, and the real-space erfc sum over the neighbour list
a chunk of pairs at a time with analytic derivatives, so no per-pair or per-atom-times-stencil tensor
exists for the whole system at once (1.1 million atoms of water fit in a few GB). `energy` is the same
number through torch-pme's calculator, differentiable w.r.t. positions and cell."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from gnnmd.progress import hidden
from gnnmd.units import COULOMB_CONSTANT

# pairs per chunk of forward()'s real-space sum, and atoms per chunk of its mesh interpolation
PAIR_CHUNK = 1 << 20
ATOM_CHUNK = 1 << 15
# the normalisations torch-pme's PMECalculator gives its k-space filter
FFT_NORM, IFFT_NORM = "backward", "forward"


@dataclass(frozen=True)
class PMESettings:
    """What a model's PME Coulomb part is, the same for every system it meets (the mesh and smearing are
    chosen per system from these): the one owner of these defaults. `special` are the Coulomb weights of
    1-2, 1-3 and 1-4 pairs, `angle` whether a 1-3 pair must end a listed angle (LAMMPS' special_bonds
    `coul ... angle yes`); they come from the reference force field (`for_force_field`)."""

    accuracy: float = 1e-5
    real_space_cutoff: float = 8.0
    special: tuple[float, float, float] = (0.0, 0.0, 1.0)  # SPC/Fw's special_bonds coul 0.0 0.0 1.0
    angle: bool = True
    interpolation_nodes: int = 4

    @classmethod
    def from_stored(cls, stored: dict | None) -> PMESettings:
        """The settings a checkpoint or cache stored: older ones named the real-space cutoff `cutoff` and
        gave only the 1-2 and 1-3 weights (1-4 pairs were full, 1-3 pairs the ends of angles)."""
        stored = dict(stored or {})
        if "cutoff" in stored:
            stored["real_space_cutoff"] = stored.pop("cutoff")
        special = tuple(float(f) for f in (stored.get("special") or cls.special))
        values = {f.name: stored[f.name] for f in fields(cls) if stored.get(f.name) is not None}
        values["special"] = special + (1.0,) * (3 - len(special))
        return cls(**values)

    @classmethod
    def for_force_field(cls, force_field, **overrides) -> PMESettings:
        """The settings that reproduce `force_field`'s Coulomb part: its special_bonds Coulomb weights and
        its kspace accuracy (torch-pme's default where it has none)."""
        special = force_field.special_bonds
        if special.dihedral and special.coul[2] != 1.0:
            raise ValueError(
                f"{force_field.source}: special_bonds dihedral yes with a 1-4 Coulomb weight is not supported yet"
            )
        kspace = force_field.kspace
        values = {"special": special.coul, "angle": special.angle}
        values.update({"accuracy": kspace[1]} if kspace else {})
        return cls(**{**values, **overrides})

    def to_dict(self) -> dict:
        return {**asdict(self), "special": list(self.special)}


def has_charges(topology) -> bool:
    """Whether a system carries charges at all (the default for --electrostatics is pme if so)."""
    return bool(np.any(np.abs(np.asarray(topology.charges)) > 0))


def special_pairs(topology, settings: PMESettings | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unique 1-2, 1-3 and 1-4 pairs (P, 2) with i < j whose Coulomb weight is not 1, and their weights (P,),
    as LAMMPS' special list finds them (gnnmd.data.topology.special_neighbours)."""
    from gnnmd.data.topology import special_neighbours

    settings = settings or PMESettings()
    levels = special_neighbours(topology, angle=settings.angle)
    kept = [(pairs, factor) for pairs, factor in zip(levels, settings.special) if factor != 1.0 and len(pairs)]
    if not kept:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)
    pairs = np.concatenate([p for p, _ in kept])
    factors = np.concatenate([np.full(len(p), float(f)) for p, f in kept])
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order], factors[order]


def linked_groups(n_atoms: int, pairs: np.ndarray) -> np.ndarray:
    """A label per atom, the same for atoms linked through `pairs` (the molecules, for bonds and angles):
    an excluded pair is within a group, so only pairs within one are looked up among them."""
    labels = np.arange(n_atoms, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    while len(pairs):
        low = np.minimum(labels[pairs[:, 0]], labels[pairs[:, 1]])
        new = labels.copy()
        np.minimum.at(new, pairs[:, 0], low)
        np.minimum.at(new, pairs[:, 1], low)
        new = new[new]
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def current_config(config: dict) -> dict:
    """A stored PME config in today's names and form (before 0.2 the real-space cutoff was `cutoff`; before
    0.3 `special` held the 1-2 and 1-3 weights only), with PMESettings' defaults for what it lacks."""
    return {**{k: v for k, v in config.items() if k != "cutoff"}, **PMESettings.from_stored(config).to_dict()}


def choose_pme_parameters(
    charges: np.ndarray,
    cell: np.ndarray,
    accuracy: float = PMESettings.accuracy,
    real_space_cutoff: float = PMESettings.real_space_cutoff,
    interpolation_nodes: int = PMESettings.interpolation_nodes,
) -> dict:
    """Smearing and mesh spacing for a target RMS force error `accuracy` (in e^2/A^2, i.e. relative to
    the force between two unit charges 1 A apart, like LAMMPS' kspace accuracy), from torch-pme's error
    formulas: the smearing that makes the real-space error accuracy/4 at `real_space_cutoff`, then the coarsest
    mesh whose k-space error stays below accuracy. Deterministic, done once per system."""
    import torchpme
    from torchpme.tuning.pme import PMEErrorBounds
    from torchpme.tuning.tuner import TunerBase

    q = torch.as_tensor(np.asarray(charges, dtype=np.float64)).reshape(-1, 1)
    c = torch.as_tensor(np.asarray(cell, dtype=np.float64)).reshape(3, 3)
    pos = torch.zeros(len(q), 3, dtype=torch.float64)
    tuner = TunerBase(q, c, pos, float(real_space_cutoff), torchpme.PMECalculator)
    smearing = tuner.estimate_smearing(float(accuracy))
    bounds = PMEErrorBounds(q, c, pos)
    nodes = torch.tensor(int(interpolation_nodes))
    # mesh spacings from coarse to fine, in steps of ~5%
    spacing = smearing
    while spacing > 0.02 * smearing:
        error = float(bounds.err_kspace(torch.tensor(smearing), torch.tensor(spacing), nodes))
        if error < accuracy:
            break
        spacing *= 0.95
    else:
        raise ValueError(f"no PME mesh reaches accuracy {accuracy} for this system")
    return {
        "smearing": float(smearing),
        "mesh_spacing": float(spacing),
        "interpolation_nodes": int(interpolation_nodes),
        "real_space_cutoff": float(real_space_cutoff),
        "accuracy": float(accuracy),
    }


class Electrostatics(torch.nn.Module):
    """PME Coulomb energy and forces of one system: fixed charges and excluded pairs, any frame (cell).

    Works in float64 inside; `energy(positions, cell)` is differentiable w.r.t. both, `forward` returns
    (energy kcal/mol, forces kcal/mol/A) detached, in the input dtype."""

    def __init__(
        self,
        charges,
        special_pairs=None,
        special_factors=None,
        smearing: float = 1.0,
        mesh_spacing: float = 0.5,
        interpolation_nodes: int = PMESettings.interpolation_nodes,
        real_space_cutoff: float = PMESettings.real_space_cutoff,
        accuracy: float | None = None,
        prefactor: float = COULOMB_CONSTANT,
        special=None,
        angle: bool = PMESettings.angle,
    ):
        super().__init__()
        import torchpme

        charges = torch.as_tensor(np.asarray(charges, dtype=np.float64))
        pairs = np.zeros((0, 2), dtype=np.int64) if special_pairs is None else np.asarray(special_pairs)
        factors = np.zeros(len(pairs)) if special_factors is None else np.asarray(special_factors)
        self.params = {
            "smearing": float(smearing),
            "mesh_spacing": float(mesh_spacing),
            "interpolation_nodes": int(interpolation_nodes),
            "real_space_cutoff": float(real_space_cutoff),
            "accuracy": accuracy,
            "prefactor": float(prefactor),
            "special": None if special is None else [float(f) for f in special],
            "angle": bool(angle),
        }
        self.n_atoms = len(charges)
        self.register_buffer("charges", charges.reshape(-1, 1))
        self.register_buffer("pair_index", torch.as_tensor(pairs, dtype=torch.int64).reshape(-1, 2))
        self.register_buffer("pair_factor", torch.as_tensor(factors, dtype=torch.float64).reshape(-1))
        self._pair_keys = self._keys(pairs)
        self._groups = torch.from_numpy(linked_groups(self.n_atoms, pairs))
        self.pair_chunk, self.atom_chunk = PAIR_CHUNK, ATOM_CHUNK
        potential = torchpme.CoulombPotential(smearing=float(smearing), prefactor=float(prefactor))
        self.calculator = torchpme.PMECalculator(
            potential,
            mesh_spacing=float(mesh_spacing),
            interpolation_nodes=int(interpolation_nodes),
            full_neighbor_list=False,
        ).to(torch.float64)

    def _apply(self, fn, recurse=True):
        """Follow device moves of an enclosing model but stay float64 (e.g. through `model.float()`)."""
        super()._apply(fn, recurse)
        return super()._apply(lambda t: t.to(torch.float64) if t.is_floating_point() else t, recurse)

    def _keys(self, pairs: np.ndarray) -> np.ndarray:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return np.sort(pairs.min(axis=1) * self.n_atoms + pairs.max(axis=1))

    @classmethod
    def for_system(cls, topology, cell, config: dict | PMESettings | None = None, **options) -> Electrostatics:
        """Built once per system from its topology and one representative cell (e.g. the mean cell).
        `config` (PMESettings, or another system's `config()`, e.g. a checkpoint's) carries over the
        accuracy, real-space cutoff, special weights and interpolation order; smearing and mesh are chosen
        for this system. `options` (PMESettings fields) override them."""
        if not has_charges(topology):
            raise ValueError("this system has no charges: electrostatics would be zero (use --electrostatics none)")
        settings = config if isinstance(config, PMESettings) else PMESettings.from_stored(config)
        settings = replace(settings, **options)
        params = choose_pme_parameters(
            topology.charges,
            np.asarray(cell, dtype=np.float64),
            accuracy=settings.accuracy,
            real_space_cutoff=settings.real_space_cutoff,
            interpolation_nodes=settings.interpolation_nodes,
        )
        pairs, factors = special_pairs(topology, settings)
        return cls(topology.charges, pairs, factors, special=settings.special, angle=settings.angle, **params)

    @classmethod
    def from_config(cls, topology, config: dict) -> Electrostatics:
        """The same settings again (a `config()`) for frames of the same system. For another system, use
        `for_system` with the config: the mesh is chosen per system."""
        settings = PMESettings.from_stored(config)
        mesh = {k: config[k] for k in ("smearing", "mesh_spacing", "prefactor") if config.get(k) is not None}
        pairs, factors = special_pairs(topology, settings)
        return cls(
            topology.charges,
            pairs,
            factors,
            special=settings.special,
            angle=settings.angle,
            accuracy=settings.accuracy,
            real_space_cutoff=settings.real_space_cutoff,
            interpolation_nodes=settings.interpolation_nodes,
            **mesh,
        )

    def config(self) -> dict:
        """Everything needed to rebuild this object given the topology (for checkpoints and cache keys)."""
        return dict(self.params)

    def _real_space_pairs(self, positions: np.ndarray, cell: np.ndarray):
        """Half neighbour list within the real-space cutoff (vesin cell lists), split into ordinary pairs
        and the nearest image of each excluded pair."""
        from vesin import NeighborList

        nl = NeighborList(cutoff=self.params["real_space_cutoff"], full_list=False)
        i, j, shifts = nl.compute(points=positions, box=cell, periodic=True, quantities="ijS")
        i, j, shifts = i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)
        keys = np.minimum(i, j) * self.n_atoms + np.maximum(i, j)
        special = np.zeros(len(i), dtype=bool)
        if len(self._pair_keys):
            hit = np.flatnonzero(np.isin(keys, self._pair_keys))
            vectors = positions[j[hit]] - positions[i[hit]] + shifts[hit] @ cell
            order = hit[np.lexsort((np.linalg.norm(vectors, axis=1), keys[hit]))]
            unique_keys, first = np.unique(keys[order], return_index=True)
            self._check_excluded_found(unique_keys)
            special[order[first]] = True
        return (i, j, shifts), special

    def energy(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Coulomb energy (kcal/mol, float64 scalar), differentiable w.r.t. positions and cell."""
        if positions.shape != (self.n_atoms, 3):
            raise ValueError(f"positions have shape {tuple(positions.shape)}, expected ({self.n_atoms}, 3)")
        positions = positions.to(torch.float64)
        cell = cell.to(torch.float64).reshape(3, 3)
        (i, j, shifts), special = self._real_space_pairs(
            np.ascontiguousarray(positions.detach().cpu().numpy()), np.ascontiguousarray(cell.detach().cpu().numpy())
        )
        device = positions.device
        i, j = torch.from_numpy(i).to(device), torch.from_numpy(j).to(device)
        shift_vectors = torch.from_numpy(shifts).to(device, torch.float64) @ cell
        vectors = positions[j] - positions[i] + shift_vectors
        distances = torch.linalg.norm(vectors, dim=1)
        keep = torch.from_numpy(~special).to(device)
        potential = self.calculator(
            charges=self.charges,
            cell=cell,
            positions=positions,
            neighbor_indices=torch.stack([i[keep], j[keep]], dim=1),
            neighbor_distances=distances[keep],
        )
        energy = (self.charges * potential).sum()
        if special.any():
            # the k-space sum holds q_i q_j erf(r/(sqrt2 s))/r of each excluded pair; make it f q_i q_j / r
            hit = torch.from_numpy(special).to(device)
            r = distances[hit]
            qq = self.charges[i[hit], 0] * self.charges[j[hit], 0]
            key = (torch.minimum(i[hit], j[hit]) * self.n_atoms + torch.maximum(i[hit], j[hit])).cpu().numpy()
            factor = self.pair_factor[torch.from_numpy(np.searchsorted(self._pair_keys, key)).to(device)]
            lr = self.calculator.potential.lr_from_dist(r)
            energy = energy + (qq * (factor * self.params["prefactor"] / r - lr)).sum()
        return energy

    def virial(self, positions, cell) -> np.ndarray:
        """Virial (3, 3, kcal/mol) of the Coulomb energy: minus its derivative under a strain of positions
        and cell alike (symmetrised), by autograd through `energy` (for a frame, not for millions of atoms)."""
        strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
        deformation = torch.eye(3, dtype=torch.float64) + strain
        positions = torch.as_tensor(np.asarray(positions, dtype=np.float64))
        cell = torch.as_tensor(np.asarray(cell, dtype=np.float64)).reshape(3, 3)
        with torch.enable_grad():
            (derivative,) = torch.autograd.grad(self.energy(positions @ deformation, cell @ deformation), strain)
        derivative = derivative.numpy()
        return -0.5 * (derivative + derivative.T)

    def forward(self, positions: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy, forces) of one frame, detached, in the dtype of `positions`: the same numbers as
        `energy` and minus its gradient, computed in chunks of atoms and of pairs (see the module doc)."""
        dtype = positions.dtype if positions.is_floating_point() else torch.float64
        if positions.shape != (self.n_atoms, 3):
            raise ValueError(f"positions have shape {tuple(positions.shape)}, expected ({self.n_atoms}, 3)")
        positions = positions.detach().to(torch.float64)
        cell = cell.detach().to(positions.device, torch.float64).reshape(3, 3)
        with torch.no_grad():
            energy, forces = self._kspace(positions, cell)
            energy = energy + self._real_space(positions, cell, forces)
        return energy.to(dtype), forces.to(dtype)

    def _atom_chunks(self):
        return (slice(start, start + self.atom_chunk) for start in range(0, self.n_atoms, self.atom_chunk))

    def _stencil(self, charges: torch.Tensor) -> torch.Tensor:
        """charges times the weights of the mesh points around each atom, after the interpolator's
        `compute_weights` (torch-pme's MeshInterpolator.points_to_mesh / mesh_to_points products)."""
        mesh = self.calculator.mesh_interpolator
        weights = mesh.interpolation_weights
        return charges * weights[mesh.x_shifts, :, 0] * weights[mesh.y_shifts, :, 1] * weights[mesh.z_shifts, :, 2]

    def _flat(self, ns: torch.Tensor) -> torch.Tensor:
        """The interpolator's mesh points around each atom as indices into the flattened mesh."""
        mesh = self.calculator.mesh_interpolator
        return (mesh.x_indices * int(ns[1]) + mesh.y_indices) * int(ns[2]) + mesh.z_indices

    def _kspace(self, positions: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torch-pme's k-space energy (what PMECalculator gives with an empty neighbour list) and its
        forces. The forces are -q_i grad phi(r_i) of the potential mesh phi held fixed: the filter is an
        even function of k, so that is the whole derivative (through the density too)."""
        from torchpme.lib import get_ns_mesh

        mesh = self.calculator.mesh_interpolator
        ns = get_ns_mesh(cell, self.calculator.mesh_spacing)
        mesh.update(cell, ns)
        charges = self.charges[:, 0]
        potential = self._filtered(self._density(positions, charges, ns), cell, ns)
        ivolume = torch.abs(cell.det()).pow(-1)
        energy, forces = torch.zeros((), dtype=torch.float64, device=positions.device), torch.empty_like(positions)
        for chunk in self._atom_chunks():
            with torch.enable_grad():
                at = positions[chunk].clone().requires_grad_(True)
                mesh.compute_weights(at)
                values = potential.view(-1)[self._flat(ns)] * self._stencil(charges[chunk])
                part = values.sum() * ivolume
                (grad,) = torch.autograd.grad(part, at)
            energy, forces[chunk] = energy + part.detach(), -grad
        coulomb = self.calculator.potential
        total = charges.sum()
        corrections = (
            coulomb.self_contribution() * (charges**2).sum() + 2 * coulomb.background_correction() * total**2 * ivolume
        )
        return (energy - corrections) / 2, forces

    def _density(self, positions: torch.Tensor, charges: torch.Tensor, ns: torch.Tensor) -> torch.Tensor:
        """The charges spread on the mesh (torch-pme's points_to_mesh), a chunk of atoms at a time."""
        mesh = self.calculator.mesh_interpolator
        density = torch.zeros(tuple(int(n) for n in ns), dtype=torch.float64, device=positions.device)
        for chunk in self._atom_chunks():
            mesh.compute_weights(positions[chunk])
            density.view(-1).index_add_(0, self._flat(ns).view(-1), self._stencil(charges[chunk]).view(-1))
        return density

    def _filtered(self, density: torch.Tensor, cell: torch.Tensor, ns: torch.Tensor) -> torch.Tensor:
        """The potential mesh: torch-pme's KSpaceFilter (rfft, times its kernel of |k|^2, inverse rfft) with
        the kernel made a slab of k-vectors at a time instead of all k-vectors at once."""
        hat = torch.fft.rfftn(density, norm=FFT_NORM)
        del density
        reciprocal = 2 * torch.pi * torch.linalg.inv(cell).T
        axes = [torch.fft.fftfreq(int(ns[0]), dtype=cell.dtype, device=cell.device)]
        axes += [torch.fft.fftfreq(int(ns[1]), dtype=cell.dtype, device=cell.device)]
        axes += [torch.fft.rfftfreq(int(ns[2]), dtype=cell.dtype, device=cell.device)]
        kx, ky, kz = ((reciprocal[d] * ns[d]) * axes[d].unsqueeze(-1) for d in range(3))
        slab = max(1, (1 << 22) // (hat.shape[1] * hat.shape[2]))
        for start in range(0, hat.shape[0], slab):
            k = kx[start : start + slab, None, None] + ky[None, :, None] + kz[None, None, :]
            hat[start : start + slab] *= self.calculator.potential.kernel_from_k_sq(torch.linalg.norm(k, dim=3) ** 2)
        return torch.fft.irfftn(hat, s=tuple(int(n) for n in ns), norm=IFFT_NORM)

    def _real_space(self, positions: torch.Tensor, cell: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
        """The real-space erfc sum over the half neighbour list (vesin's arrays used in place) and the
        excluded-pair correction, a chunk of pairs at a time; adds the forces to `forces`."""
        from vesin import NeighborList

        nl = NeighborList(cutoff=self.params["real_space_cutoff"], full_list=False)
        points = np.ascontiguousarray(positions.cpu().numpy())
        i, j, shifts = nl.compute(
            points=points, box=np.ascontiguousarray(cell.cpu().numpy()), periodic=True, quantities="ijS", copy=False
        )
        keys = torch.from_numpy(self._pair_keys).to(positions.device)
        groups, charges = self._groups.to(positions.device), self.charges[:, 0].contiguous()
        energy = torch.zeros((), dtype=torch.float64, device=positions.device)
        none = torch.zeros(0, dtype=torch.int64, device=positions.device)
        hits = [(none, none, torch.zeros((0, 3), dtype=torch.float64, device=positions.device))]
        for start in range(0, len(i), self.pair_chunk):
            chunk = slice(start, start + self.pair_chunk)
            pair = [torch.from_numpy(a[chunk].astype(np.int64)).to(positions.device) for a in (i, j)]
            shift = torch.from_numpy(shifts[chunk].astype(np.float64)).to(positions.device)
            vectors = torch.addmm(positions.index_select(0, pair[1]) - positions.index_select(0, pair[0]), shift, cell)
            qq = charges.index_select(0, pair[0]) * charges.index_select(0, pair[1])
            if len(keys):  # excluded pairs (all their images): left out here, sorted out below
                hit = torch.nonzero(groups.index_select(0, pair[0]) == groups.index_select(0, pair[1])).squeeze(1)
                a, b = pair[0][hit], pair[1][hit]
                key = torch.minimum(a, b) * self.n_atoms + torch.maximum(a, b)
                hit = hit[keys[torch.searchsorted(keys, key).clamp_(max=len(keys) - 1)] == key]
                qq[hit] = 0.0
                hits.append((pair[0][hit], pair[1][hit], vectors[hit]))
            energy = energy + self._erfc_pairs(pair[0], pair[1], vectors, qq, forces)
        del i, j, shifts  # views of the list's memory, which goes with `nl`
        if len(keys):
            energy = energy + self._excluded(*(torch.cat(parts) for parts in zip(*hits)), forces)
        return energy

    def _erfc_pairs(self, i, j, vectors, qq, forces) -> torch.Tensor:
        """sum of k q_i q_j erfc(r / (sqrt2 s)) / r over the pairs (torch-pme's sr_from_dist), adding the
        analytic forces to `forces`."""
        a = 1.0 / (np.sqrt(2.0) * self.params["smearing"])
        r = torch.linalg.vector_norm(vectors, dim=1)
        kqq = self.params["prefactor"] * qq
        pair_energy = kqq * torch.special.erfc(a * r) / r
        # dE/dr / r, times the vector r_j - r_i: the gradient w.r.t. r_j, minus that w.r.t. r_i
        gradient = (-(pair_energy + kqq * (2 * a / np.sqrt(np.pi)) * torch.exp(-((a * r) ** 2))) / r**2)[
            :, None
        ] * vectors
        forces.index_add_(0, i, gradient)
        forces.index_add_(0, j, -gradient)
        return pair_energy.sum()

    def _excluded(self, i, j, vectors, forces) -> torch.Tensor:
        """Of the pairs that are excluded pairs (any image within the cutoff): the nearest image of each
        gets f q_i q_j / r minus the long-range part the k-space sum holds (as `energy` does), the others
        (only in small cells) are ordinary real-space pairs."""
        r = torch.linalg.vector_norm(vectors, dim=1)
        key = (torch.minimum(i, j) * self.n_atoms + torch.maximum(i, j)).cpu().numpy()
        order = np.lexsort((r.cpu().numpy(), key))
        unique_keys, first = np.unique(key[order], return_index=True)
        self._check_excluded_found(unique_keys)
        nearest = np.zeros(len(key), dtype=bool)
        nearest[order[first]] = True
        nearest = torch.from_numpy(nearest).to(vectors.device)
        qq = self.charges[i, 0] * self.charges[j, 0]
        energy = self._erfc_pairs(i, j, vectors, torch.where(nearest, 0.0, qq), forces)
        i, j, qq, key = i[nearest], j[nearest], qq[nearest], key[nearest.cpu().numpy()]
        factor = self.pair_factor[torch.from_numpy(np.searchsorted(self._pair_keys, key)).to(vectors.device)]
        with torch.enable_grad():
            v = vectors[nearest].clone().requires_grad_(True)
            r = torch.linalg.vector_norm(v, dim=1)
            lr = self.calculator.potential.lr_from_dist(r)
            correction = (qq * (factor * self.params["prefactor"] / r - lr)).sum()
            (gradient,) = torch.autograd.grad(correction, v)
        forces.index_add_(0, i, gradient)
        forces.index_add_(0, j, -gradient)
        return energy + correction.detach()

    def _check_excluded_found(self, found_keys: np.ndarray) -> None:
        if len(found_keys) != len(self._pair_keys):
            missing = np.setdiff1d(self._pair_keys, found_keys)[:3]
            raise ValueError(
                f"excluded pair(s) {[(int(k // self.n_atoms), int(k % self.n_atoms)) for k in missing]} "
                f"are farther apart than the real-space cutoff {self.params['real_space_cutoff']} A: broken molecule?"
            )

    def compute_frames(self, frames, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Coulomb energies (F,) float64 and forces (F, N, 3) float64 of every frame of a Frames object."""
        from tqdm.auto import tqdm

        energies = np.empty(len(frames), dtype=np.float64)
        forces = np.empty((len(frames), self.n_atoms, 3), dtype=np.float64)
        for k in tqdm(range(len(frames)), desc="Coulomb (PME)", disable=hidden(progress), leave=False):
            e, f = self(
                torch.from_numpy(frames.positions[k].astype(np.float64)),
                torch.from_numpy(frames.cells[k].astype(np.float64)),
            )
            energies[k], forces[k] = float(e), f.numpy()
        return energies, forces

    def compute_virials(self, frames, progress: bool = True) -> np.ndarray:
        """Coulomb virials (F, 3, 3) float64, kcal/mol, of every frame of a Frames object (`virial` per frame:
        the targets of a stress term are reference minus these)."""
        from tqdm.auto import tqdm

        virials = np.empty((len(frames), 3, 3), dtype=np.float64)
        for k in tqdm(range(len(frames)), desc="Coulomb virial (PME)", disable=hidden(progress), leave=False):
            virials[k] = self.virial(frames.positions[k], frames.cells[k])
        return virials
