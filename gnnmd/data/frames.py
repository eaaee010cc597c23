"""In-memory frames of one system (positions, forces, cell, energy) and its topology, stored as .npz.

Frames, not graphs, are what is kept on disk: edges are rebuilt on the fly (docs/design.md)."""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from gnnmd.data.topology import Topology
from gnnmd.files import atomic_write

FRAMES_FILE = "frames.npz"  # a dataset folder's frames, read back from its LAMMPS output
META_KEY = "meta"  # what a frames file records about itself: one JSON string, readable without pickle
# what np.load and reading an npz's members raise for a missing, truncated or otherwise broken file
NPZ_ERRORS = (
    OSError, ValueError, KeyError, IndexError, EOFError, TypeError, AttributeError, zipfile.BadZipFile, zlib.error
)  # fmt: skip


class DataWarning(UserWarning):
    """Data that can be used but is not quite right (a truncated last frame, a cache that cannot be checked)."""


# segment ids from here on mark frames added to a dataset after it was made (active learning): they are
# always training frames, so that a dataset's validation split stays the one of its original segments
ADDED_SEGMENTS = 1_000_000


@dataclass
class Frames:
    """A trajectory of one system: float32 positions/forces (F, N, 3), cells (F, 3, 3) with the lattice
    vectors as rows, float64 potential energies (F,) or None, and where each frame came from."""

    topology: Topology
    positions: np.ndarray
    forces: np.ndarray
    cells: np.ndarray
    energies: np.ndarray | None
    timesteps: np.ndarray  # (F,) int64
    segments: np.ndarray  # (F,) int64, the independent run a frame belongs to

    def __len__(self) -> int:
        return len(self.positions)

    def save(self, path: Path, meta: dict | None = None) -> None:
        """Write atomically (temp file + rename), so an interrupted save never leaves a broken file.

        `meta` (anything JSON can hold) is stored beside the arrays as a one-element string array, so the
        file stays loadable with allow_pickle=False; `load_with_meta` gives it back."""
        path = Path(path)
        arrays = {f"topology_{f.name}": getattr(self.topology, f.name) for f in fields(Topology)}
        arrays.update(
            positions=self.positions,
            forces=self.forces,
            cells=self.cells,
            timesteps=self.timesteps,
            segments=self.segments,
        )
        if self.energies is not None:
            arrays["energies"] = self.energies
        if meta is not None:
            arrays[META_KEY] = np.array([json.dumps(meta)])
        atomic_write(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: Path) -> Frames:
        return cls.load_with_meta(path)[0]

    @classmethod
    def load_with_meta(cls, path: Path) -> tuple[Frames, dict | None]:
        """The frames of a file written by `save`, and the `meta` saved with them (None without).

        A missing, truncated or otherwise broken file is a ValueError naming it."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                topology = Topology(**{f.name: data[f"topology_{f.name}"] for f in fields(Topology)})
                frames = cls(
                    topology=topology,
                    positions=data["positions"],
                    forces=data["forces"],
                    cells=data["cells"],
                    energies=data["energies"] if "energies" in data else None,
                    timesteps=data["timesteps"],
                    segments=data["segments"],
                )
                meta = json.loads(str(data[META_KEY][0])) if META_KEY in data else None
        except NPZ_ERRORS as err:
            raise ValueError(f"{path}: not a readable gnnmd frames file ({type(err).__name__}: {err})") from err
        return frames, meta

    def mean_cell(self) -> np.ndarray:
        """The mean cell (float64): one representative cell, e.g. to choose PME settings once per system."""
        return self.cells.astype(np.float64).mean(axis=0)

    def subset(self, indices) -> Frames:
        indices = np.asarray(indices)
        return Frames(
            topology=self.topology,
            positions=self.positions[indices],
            forces=self.forces[indices],
            cells=self.cells[indices],
            energies=None if self.energies is None else self.energies[indices],
            timesteps=self.timesteps[indices],
            segments=self.segments[indices],
        )


def make_whole(topology: Topology, positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Positions with every bonded atom moved to the nearest image of its partner, so no molecule is
    split across the box edge (dumps hold wrapped coordinates)."""
    positions = np.array(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    inverse = np.linalg.inv(cell)
    for _ in range(max(1, len(topology.bonds))):  # a pass per bond at most: enough for any tree
        a, b = topology.bonds[:, 0], topology.bonds[:, 1]
        d = positions[b] - positions[a]
        jump = np.round(d @ inverse) @ cell
        if not np.any(np.abs(jump) > 1e-9):
            break
        positions[b] -= jump
    return positions


def replicate(topology: Topology, positions: np.ndarray, cell: np.ndarray, reps: tuple[int, int, int]):
    """A (nx, ny, nz) supercell of one periodic frame: topology, positions and cell, with molecules,
    bonds and angles renumbered per copy (molecules made whole first, so each bond stays inside its
    copy). Used for scaling benchmarks and size-consistency checks."""
    nx, ny, nz = reps
    n = topology.n_atoms
    positions = make_whole(topology, positions, cell)
    shifts = np.array([(a, b, c) for a in range(nx) for b in range(ny) for c in range(nz)], dtype=np.float64)
    copies = len(shifts)
    big_positions = (positions[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3).astype(positions.dtype)
    offsets = (np.arange(copies) * n)[:, None, None]
    molecule_span = int(topology.molecules.max()) + 1 if n else 0

    def tiled(values):
        return np.tile(values, copies)

    big = Topology(
        types=tiled(topology.types),
        charges=tiled(topology.charges),
        epsilon=tiled(topology.epsilon),
        sigma=tiled(topology.sigma),
        molecules=(topology.molecules[None, :] + molecule_span * np.arange(copies)[:, None]).reshape(-1),
        bonds=(topology.bonds[None] + offsets).reshape(-1, 2),
        angles=(topology.angles[None] + offsets).reshape(-1, 3),
        table_type_ids=topology.table_type_ids,
        table_names=topology.table_names,
        table_masses=topology.table_masses,
        table_charges=topology.table_charges,
        table_epsilon=topology.table_epsilon,
        table_sigma=topology.table_sigma,
    )
    big_cell = np.asarray(cell) * np.array([nx, ny, nz], dtype=np.float64)[:, None]
    return big, big_positions, big_cell.astype(np.asarray(cell).dtype)
