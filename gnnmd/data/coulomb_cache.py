"""The Coulomb part of every stored frame, computed once and kept next to the dataset's frames.

A model trained with PME learns reference minus Coulomb; the Coulomb energies and forces of the
training frames do not change between epochs or runs, so they are stored as coulomb_<hash>.npz in the
dataset folder. The hash covers the positions, cells, charges, excluded pairs and PME settings, so a
changed input gets a new file. What computes them (PME, in gnnmd.models.electrostatics) is passed in:
the data layer stores, it does not do physics.

A stress term in training (`--stress-weight`) also needs the Coulomb virial of each frame: asked for
(`virials=True`), it is computed once and added to the same file, so a cache written without it is
extended, not recomputed, and runs that do not ask for it never pay for it."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gnnmd.data.dataset import batch_frames
from gnnmd.data.frames import NPZ_ERRORS, DataWarning
from gnnmd.files import atomic_write

CACHE_VERSION = 1


@dataclass
class CoulombCache:
    """Coulomb energies and forces of every frame of one Frames object, and the PME settings used.

    `for_batch` gives the part to subtract from a batch's targets (the batch's graphs carry `frame`,
    their index in the Frames)."""

    energies: np.ndarray  # (F,) float64, kcal/mol
    forces: np.ndarray  # (F, N, 3) float32, kcal/mol/A
    params: dict
    path: Path | None = None
    virials: np.ndarray | None = None  # (F, 3, 3) float64, kcal/mol; None: not asked for

    def subset(self, indices) -> CoulombCache:
        """The entries of some frames, in the order of `indices` (as `Frames.subset`)."""
        indices = np.asarray(indices)
        virials = None if self.virials is None else self.virials[indices]
        return CoulombCache(self.energies[indices], self.forces[indices], self.params, None, virials)

    def virials_for_batch(self, batch) -> torch.Tensor:
        """(B, 3, 3) float64 Coulomb virials of the frames of a PyG batch, in its order."""
        if self.virials is None:
            raise ValueError("this Coulomb cache holds no virials (ask coulomb_cache for them)")
        frames = batch_frames(batch)
        return torch.from_numpy(self.virials[frames]).to(batch.pos.device)

    def for_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(forces (sum N, 3) float32, energies (B,) float64) of the frames in a PyG batch, in its order."""
        frames = batch_frames(batch)
        forces = torch.from_numpy(self.forces[frames].reshape(-1, 3))
        energies = torch.from_numpy(self.energies[frames])
        if forces.shape[0] != batch.num_nodes:
            raise ValueError(f"Coulomb cache has {self.forces.shape[1]} atoms per frame; the batch does not match")
        return forces.to(batch.pos.device), energies.to(batch.pos.device)


def _cache_key(frames, electrostatics) -> str:
    digest = hashlib.sha1()
    digest.update(repr((CACHE_VERSION, sorted(electrostatics.config().items()))).encode())
    for array in (
        frames.positions,
        frames.cells,
        electrostatics.charges.cpu().numpy(),
        electrostatics.pair_index.cpu().numpy(),
        electrostatics.pair_factor.cpu().numpy(),
    ):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _read(path: Path, frames, electrostatics) -> CoulombCache | None:
    """The stored cache, or None (with a warning naming the file) when it is broken and must be recomputed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            energies, forces = data["energies"], data["forces"]
            virials = data["virials"] if "virials" in data else None
        if energies.shape != (len(frames),) or forces.shape != frames.positions.shape:
            raise ValueError(f"energies {energies.shape} and forces {forces.shape} do not fit the frames")
        if virials is not None and virials.shape != (len(frames), 3, 3):
            raise ValueError(f"virials {virials.shape} do not fit the frames")
    except NPZ_ERRORS as err:
        warnings.warn(
            f"{path}: broken Coulomb cache ({type(err).__name__}: {err}); recomputing it", DataWarning, stacklevel=3
        )
        return None
    return CoulombCache(energies, forces, electrostatics.config(), path, virials)


def _write(cache: CoulombCache) -> None:
    arrays = dict(energies=cache.energies, forces=cache.forces)
    if cache.virials is not None:
        arrays["virials"] = cache.virials
    atomic_write(cache.path, lambda handle: np.savez(handle, **arrays))


def coulomb_cache(
    frames, directory: str | Path | None, electrostatics, progress: bool = True, virials: bool = False
) -> CoulombCache:
    """Coulomb energies and forces (and with `virials`, virials) of every frame by `electrostatics` (an
    `Electrostatics`: its `config()`, charges, excluded pairs, `compute_frames` and `compute_virials`), read
    from `directory` when stored there before, else computed and, with a `directory`, stored (a broken
    stored file is named, recomputed and replaced atomically; one without the virials asked for gets them
    added)."""
    path = None
    cache = None
    if directory is not None:
        path = Path(directory) / f"coulomb_{_cache_key(frames, electrostatics)}.npz"
        if path.is_file():
            cache = _read(path, frames, electrostatics)
    changed = cache is None
    if cache is None:
        energies, forces = electrostatics.compute_frames(frames, progress=progress)
        cache = CoulombCache(energies, forces.astype(np.float32), electrostatics.config(), path)
    if virials and cache.virials is None:
        cache.virials = np.asarray(electrostatics.compute_virials(frames, progress=progress), dtype=np.float64)
        changed = True
    if changed and path is not None:
        _write(cache)
    return cache
