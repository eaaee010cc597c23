"""In-memory frames of one system (positions, forces, cell, energy) and its topology, stored as .npz.

Frames, not graphs, are what is kept on disk: edges are rebuilt on the fly (DESIGN.md)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

FRAMES_FILE = "frames.npz"


@dataclass
class Topology:
    """Per-atom parameters and connectivity of one system, read from its LAMMPS data file.

    Indices are 0-based atom positions in id order. `type_ids` are the LAMMPS type numbers; the
    type table (`table_*`) has one row per type, and per-atom `types` index into it."""

    types: np.ndarray  # (N,) int64, row in the type table
    charges: np.ndarray  # (N,) float64, e
    epsilon: np.ndarray  # (N,) float64, kcal/mol (Lennard-Jones, from Pair Coeffs)
    sigma: np.ndarray  # (N,) float64, A
    molecules: np.ndarray  # (N,) int64
    bonds: np.ndarray  # (B, 2) int64
    angles: np.ndarray  # (A, 3) int64
    table_type_ids: np.ndarray  # (T,) int64, LAMMPS type numbers
    table_names: np.ndarray  # (T,) str, element guessed from the mass
    table_masses: np.ndarray  # (T,) float64
    table_charges: np.ndarray  # (T,) float64
    table_epsilon: np.ndarray  # (T,) float64
    table_sigma: np.ndarray  # (T,) float64

    @property
    def n_atoms(self) -> int:
        return len(self.types)

    @property
    def node_features(self) -> np.ndarray:
        """(N, 3) float32: charge, epsilon, sigma: physical parameters, so no embedding is system-bound."""
        return np.stack([self.charges, self.epsilon, self.sigma], axis=1).astype(np.float32)

    def type_table(self) -> list[dict]:
        return [
            {
                "type_id": int(t),
                "name": str(n),
                "mass": float(m),
                "charge": float(q),
                "epsilon": float(e),
                "sigma": float(s),
            }
            for t, n, m, q, e, s in zip(
                self.table_type_ids,
                self.table_names,
                self.table_masses,
                self.table_charges,
                self.table_epsilon,
                self.table_sigma,
            )
        ]

    def same_as(self, other: Topology) -> bool:
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))


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

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename), so an interrupted save never leaves a broken file."""
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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> Frames:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                topology = Topology(**{f.name: data[f"topology_{f.name}"] for f in fields(Topology)})
                return cls(
                    topology=topology,
                    positions=data["positions"],
                    forces=data["forces"],
                    cells=data["cells"],
                    energies=data["energies"] if "energies" in data else None,
                    timesteps=data["timesteps"],
                    segments=data["segments"],
                )
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a readable gnnmd frames file ({err})") from err

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


def load_frames(path: str | Path) -> Frames:
    """Frames of a generated dataset directory (its frames.npz, made from the LAMMPS output if missing)
    or of a frames .npz file."""
    path = Path(path)
    if path.is_dir():
        cached = path / FRAMES_FILE
        if cached.is_file():
            return Frames.load(cached)
        from gnnmd.data.reader import read_run

        frames = read_run(path)
        frames.save(cached)
        return frames
    if path.suffix == ".npz":
        return Frames.load(path)
    raise FileNotFoundError(f"{path}: neither a gnnmd dataset directory nor a frames .npz file")


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
    big_positions = (
        (positions[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3).astype(positions.dtype)
    )
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
