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

`real_space_cutoff` is PME's own real-space cutoff, unrelated to the model's graph cutoff."""

from __future__ import annotations

import numpy as np
import torch

from gnnmd.units import COULOMB_CONSTANT

# LAMMPS special_bonds coul factors for 1-2 and 1-3 pairs (SPC/Fw: 0.0 0.0 1.0; 1-4 pairs are full)
DEFAULT_SPECIAL = (0.0, 0.0)
# the options a checkpoint's settings carry over to another system (the mesh is chosen per system)
SYSTEM_OPTIONS = ("accuracy", "real_space_cutoff", "special", "interpolation_nodes")


def has_charges(topology) -> bool:
    """Whether a system carries charges at all (the default for --electrostatics is pme if so)."""
    return bool(np.any(np.abs(np.asarray(topology.charges)) > 0))


def special_pairs(topology, special=DEFAULT_SPECIAL) -> tuple[np.ndarray, np.ndarray]:
    """Unique 1-2 (bonds) and 1-3 (angle ends) pairs (P, 2) with i < j, and their Coulomb factors (P,).

    As with `special_bonds ... angle yes`, 1-3 pairs are those that are the ends of a listed angle. A pair
    that is both keeps its 1-2 factor."""
    n = topology.n_atoms
    found: dict[int, float] = {}
    ends = topology.angles[:, [0, 2]] if len(topology.angles) else np.zeros((0, 2), dtype=np.int64)
    for pairs, factor in ((topology.bonds, special[0]), (ends, special[1])):
        for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2):
            a, b = (a, b) if a < b else (b, a)
            found.setdefault(int(a) * n + int(b), float(factor))
    keys = np.array(sorted(found), dtype=np.int64)
    pairs = np.stack([keys // n, keys % n], axis=1) if len(keys) else np.zeros((0, 2), dtype=np.int64)
    return pairs, np.array([found[int(k)] for k in keys], dtype=np.float64)


def current_config(config: dict) -> dict:
    """A stored PME config in today's names (checkpoints before 0.2 called the real-space cutoff `cutoff`)."""
    config = dict(config)
    if "cutoff" in config:
        config["real_space_cutoff"] = config.pop("cutoff")
    return config


def choose_pme_parameters(
    charges: np.ndarray,
    cell: np.ndarray,
    accuracy: float = 1e-5,
    real_space_cutoff: float = 8.0,
    interpolation_nodes: int = 4,
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
        interpolation_nodes: int = 4,
        real_space_cutoff: float = 8.0,
        accuracy: float | None = None,
        prefactor: float = COULOMB_CONSTANT,
        special=None,
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
        }
        self.n_atoms = len(charges)
        self.register_buffer("charges", charges.reshape(-1, 1))
        self.register_buffer("pair_index", torch.as_tensor(pairs, dtype=torch.int64).reshape(-1, 2))
        self.register_buffer("pair_factor", torch.as_tensor(factors, dtype=torch.float64).reshape(-1))
        self._pair_keys = self._keys(pairs)
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
    def for_system(cls, topology, cell, config: dict | None = None, **options) -> Electrostatics:
        """Built once per system from its topology and one representative cell (e.g. the mean cell).
        `config` (another system's `config()`, e.g. a checkpoint's) carries over the accuracy, real-space
        cutoff, special factors and interpolation order; smearing and mesh are chosen for this system.
        `options` (accuracy, real_space_cutoff, special, interpolation_nodes) override both."""
        if not has_charges(topology):
            raise ValueError("this system has no charges: electrostatics would be zero (use --electrostatics none)")
        settings = {"accuracy": 1e-5, "real_space_cutoff": 8.0, "special": DEFAULT_SPECIAL, "interpolation_nodes": 4}
        stored = current_config(config or {})
        settings.update({k: stored[k] for k in SYSTEM_OPTIONS if stored.get(k) is not None}, **options)
        special = settings.pop("special")
        params = choose_pme_parameters(topology.charges, np.asarray(cell, dtype=np.float64), **settings)
        pairs, factors = special_pairs(topology, special)
        return cls(topology.charges, pairs, factors, special=special, **params)

    @classmethod
    def from_config(cls, topology, config: dict) -> Electrostatics:
        """The same settings again (a `config()`) for frames of the same system. For another system, use
        `for_system` with the config: the mesh is chosen per system."""
        config = current_config(config)
        special = config.pop("special", None) or DEFAULT_SPECIAL
        pairs, factors = special_pairs(topology, special)
        return cls(topology.charges, pairs, factors, special=special, **config)

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
            if len(unique_keys) != len(self._pair_keys):
                missing = np.setdiff1d(self._pair_keys, unique_keys)[:3]
                raise ValueError(
                    f"excluded pair(s) {[(int(k // self.n_atoms), int(k % self.n_atoms)) for k in missing]} "
                    f"are farther apart than the real-space cutoff {self.params['real_space_cutoff']} A: broken molecule?"
                )
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

    def forward(self, positions: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy, forces) of one frame, detached, in the dtype of `positions`."""
        dtype = positions.dtype if positions.is_floating_point() else torch.float64
        with torch.enable_grad():
            pos = positions.detach().to(torch.float64).requires_grad_(True)
            energy = self.energy(pos, cell.detach())
            (grad,) = torch.autograd.grad(energy, pos)
        return energy.detach().to(dtype), (-grad).to(dtype)

    def compute_frames(self, frames, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Coulomb energies (F,) float64 and forces (F, N, 3) float64 of every frame of a Frames object."""
        from tqdm.auto import tqdm

        energies = np.empty(len(frames), dtype=np.float64)
        forces = np.empty((len(frames), self.n_atoms, 3), dtype=np.float64)
        for k in tqdm(range(len(frames)), desc="Coulomb (PME)", disable=not progress, leave=False):
            e, f = self(
                torch.from_numpy(frames.positions[k].astype(np.float64)),
                torch.from_numpy(frames.cells[k].astype(np.float64)),
            )
            energies[k], forces[k] = float(e), f.numpy()
        return energies, forces
