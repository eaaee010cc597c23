"""The reference virial of every frame of a dataset, computed once and kept next to its frames: the
targets of a stress term in training (`--stress-weight`).

A frame's reference virial is a LAMMPS rerun of it with the dataset's own force field (gnnmd.lammps.label);
reruns do not change between runs, so the virials are stored as virials_<hash>.npz in the dataset folder.
The hash covers the frames' positions and cells (and the cache format), so frames that change (a dataset
made again, frames added by active learning) get a new file; the file also records what computed the
virials (`source`: the force field), and one computed by another source is computed again. What computes
them is passed in: the data layer stores, LAMMPS lives in gnnmd.lammps."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gnnmd.data.dataset import batch_frames
from gnnmd.data.frames import NPZ_ERRORS, DataWarning
from gnnmd.files import atomic_write

CACHE_VERSION = 1


@dataclass
class ReferenceVirials:
    """The virial (F, 3, 3, kcal/mol, float64) of every frame of one Frames object, and what computed it.

    `for_batch` gives the targets of a batch (its graphs carry `frame`, their index in the Frames)."""

    virials: np.ndarray
    source: str
    path: Path | None = None

    def subset(self, indices) -> ReferenceVirials:
        """The virials of some frames, in the order of `indices` (as `Frames.subset`)."""
        return ReferenceVirials(self.virials[np.asarray(indices)], self.source, self.path)

    def for_batch(self, batch) -> torch.Tensor:
        """(B, 3, 3) float64 virials of the frames of a PyG batch, in its order, on its device."""
        frames = batch_frames(batch)
        return torch.from_numpy(self.virials[frames]).to(batch.pos.device)


def virial_cache_path(frames, directory: str | Path) -> Path:
    """Where the reference virials of `frames` are kept in the dataset folder `directory`."""
    digest = hashlib.sha1(repr(("reference virials", CACHE_VERSION)).encode())
    for array in (frames.positions, frames.cells):
        digest.update(np.ascontiguousarray(array).tobytes())
    return Path(directory) / f"virials_{digest.hexdigest()[:16]}.npz"


def read_reference_virials(frames, directory: str | Path) -> ReferenceVirials | None:
    """The stored reference virials of `frames`, or None: none stored, or a broken file (then a DataWarning
    names it, and it is to be computed again)."""
    path = virial_cache_path(frames, directory)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            virials, source = data["virials"], str(data["source"][0])
        if virials.shape != (len(frames), 3, 3) or not np.all(np.isfinite(virials)):
            raise ValueError(f"virials of shape {virials.shape} (or not finite) do not fit {len(frames)} frames")
    except NPZ_ERRORS as err:
        warnings.warn(
            f"{path}: broken reference-virial cache ({type(err).__name__}: {err}); recomputing it",
            DataWarning,
            stacklevel=2,
        )
        return None
    return ReferenceVirials(virials.astype(np.float64), source, path)


def reference_virial_cache(
    frames, directory: str | Path, source: str, compute: Callable[[], np.ndarray]
) -> ReferenceVirials:
    """The reference virials of `frames` (all the frames of the dataset folder `directory`): the stored ones
    when `source` computed them, else `compute()` (F, 3, 3, kcal/mol), stored atomically for next time."""
    stored = read_reference_virials(frames, directory)
    if stored is not None and stored.source == source:
        return stored
    virials = np.asarray(compute(), dtype=np.float64)
    if virials.shape != (len(frames), 3, 3):
        raise ValueError(f"{directory}: {virials.shape[0]} reference virials for {len(frames)} frames")
    path = virial_cache_path(frames, directory)
    atomic_write(path, lambda handle: np.savez(handle, virials=virials, source=np.array([source])))
    return ReferenceVirials(virials, source, path)
