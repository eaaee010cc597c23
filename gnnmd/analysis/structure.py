"""Local structure of a trajectory, where a model's MD goes wrong first: the bond lengths and angles of
its molecules, and the closest approach of atoms of different molecules (per element pair), against a
reference trajectory (LAMMPS' own MD from the same start).

Distances are minimum-image vectors under the frame's periodic cell."""

from __future__ import annotations

import numpy as np

from gnnmd.data.reader import read_lammps


def _minimum_image(vectors: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Minimum-image vectors (M, 3) in a cell with lattice vectors as rows (orthogonal or mildly skewed)."""
    fractional = vectors @ np.linalg.inv(cell)
    return (fractional - np.round(fractional)) @ cell


def _element_names(topology) -> np.ndarray:
    return np.asarray(topology.table_names)[topology.types]


def closest_approach(topology, positions: np.ndarray, cell: np.ndarray, reach: float = 4.0) -> dict[str, float]:
    """Smallest distance between atoms of different molecules per element pair (e.g. "O-O", "H-O"),
    within `reach` A (pairs farther apart are not listed)."""
    from vesin import NeighborList

    i, j, d = NeighborList(cutoff=reach, full_list=False).compute(
        points=positions.astype(np.float64), box=cell.astype(np.float64), periodic=True, quantities="ijd"
    )
    i, j = i.astype(np.int64), j.astype(np.int64)
    other = topology.molecules[i] != topology.molecules[j]
    names = _element_names(topology)
    found: dict[str, float] = {}
    for a, b, r in zip(names[i[other]], names[j[other]], d[other]):
        key = "-".join(sorted((a, b)))
        found[key] = min(found.get(key, np.inf), float(r))
    return found


def molecule_geometry(topology, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bond lengths (B,) in A and angles (A,) in degrees of one frame."""
    bonds = np.asarray(topology.bonds, dtype=np.int64).reshape(-1, 2)
    lengths = np.linalg.norm(_minimum_image(positions[bonds[:, 1]] - positions[bonds[:, 0]], cell), axis=1)
    angles = np.asarray(topology.angles, dtype=np.int64).reshape(-1, 3)
    a = _minimum_image(positions[angles[:, 0]] - positions[angles[:, 1]], cell)
    b = _minimum_image(positions[angles[:, 2]] - positions[angles[:, 1]], cell)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return lengths, np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def trajectory_structure(data_file, dump, skip: int = 0, stop: int | None = None) -> dict:
    """Over the frames [skip, stop) of a dump: the closest approach per element pair (smallest over the
    frames), and the mean, spread and extremes of its bond lengths and angles."""
    frames = read_lammps(data_file, dump, progress=False)
    lengths, angles, closest = [], [], {}
    for k in range(skip, len(frames) if stop is None else min(stop, len(frames))):
        positions, cell = frames.positions[k].astype(np.float64), frames.cells[k].astype(np.float64)
        bond, angle = molecule_geometry(frames.topology, positions, cell)
        lengths.append(bond)
        angles.append(angle)
        for key, r in closest_approach(frames.topology, positions, cell).items():
            closest[key] = min(closest.get(key, np.inf), r)
    return {
        "frames": len(lengths),
        "closest_approach": closest,
        "bond_length": _spread(np.concatenate(lengths) if lengths else np.empty(0)),
        "angle": _spread(np.concatenate(angles) if angles else np.empty(0)),
    }


def _spread(values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max())}  # fmt: skip
