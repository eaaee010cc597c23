"""What the energy model is given from its training data rather than learning it: a per-type scale and
shift of the atomic energies, the mean neighbour count, and the walls (the range of distances per
(type, type, bond class) the training frames covered).

One fitting path: from a Frames object (the training split), with the Coulomb part taken off first when
the model learns reference minus Coulomb. `fit_walls` refits only the walls onto a trained model.
The fitted values live in the model's buffers (`type_keys`, `type_scale`, `type_shift`, `n_types`,
`avg_num_neighbors`, `core_radius`, `stretch_radius`), so a checkpoint carries them."""

from __future__ import annotations

import math

import numpy as np
import torch

from gnnmd.data.graphs import BOND_ONEHOT, DISTANCE, N_BOND_CLASSES, GraphBuilder, model_class_ids, neighbor_list
from gnnmd.data.topology import TYPE_MATCH_TOLERANCE

MAX_TYPES = 16  # capacity of the per-type tables (fixed, so checkpoints load into a fresh model)


def wall_terms(core, stretch, r: torch.Tensor) -> torch.Tensor:
    """(core - r)^3 below the core radius plus (r - stretch)^3 beyond a stretch radius (> 0), per pair:
    exactly zero between the two. The wall energy is the model's strength k times this."""
    stretched = torch.where(stretch > 0, torch.relu(r - stretch), torch.zeros_like(r))
    return torch.relu(core - r) ** 3 + stretched**3


def distance_range(
    frames, atom_key: np.ndarray, n_keys: int, cutoff: float, n_classes: int = N_BOND_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """(shortest, longest) edge length over every frame's graph, each (n_keys, n_keys, n_classes) by
    (receiver key, sender key, class as a model of n_classes sees it); inf / -inf where no edge was seen.
    `atom_key`: each atom's key."""
    shortest = np.full((n_keys, n_keys, n_classes), np.inf)
    longest = np.full((n_keys, n_keys, n_classes), -np.inf)
    builder = GraphBuilder(frames.topology, cutoff)
    for k in range(len(frames)):
        graph = builder(frames.positions[k], frames.cells[k])
        attr = graph.edge_attr.double().numpy()
        index = (atom_key[graph.edge_index[1].numpy()], atom_key[graph.edge_index[0].numpy()])
        index = (*index, model_class_ids(attr[:, BOND_ONEHOT].argmax(axis=1), n_classes))
        np.minimum.at(shortest, index, attr[:, DISTANCE])
        np.maximum.at(longest, index, attr[:, DISTANCE])
    return shortest, longest


def _store_types(model, keys, scale, shift) -> list[int]:
    """Write each key's scale and shift into its table row (a new row for a new type); returns the rows."""
    n, rows = int(model.n_types), []
    for key, s, b in zip(keys, scale, shift):
        key_t = torch.as_tensor(key, dtype=model.type_keys.dtype)
        match = (model.type_keys[:n] - key_t).abs().amax(dim=-1) < TYPE_MATCH_TOLERANCE if n else torch.zeros(0)
        row = int(torch.nonzero(match)[0]) if match.any() else n
        if row == n:
            if n >= MAX_TYPES:
                raise ValueError(f"more than {MAX_TYPES} atom types: raise MAX_TYPES in gnnmd/models/priors.py")
            n += 1
        model.type_keys[row] = key_t
        model.type_scale[row] = float(s)
        model.type_shift[row] = float(b)
        rows.append(row)
    model.n_types.fill_(n)
    return rows


def _set_walls(model, rows: list[int], shortest: np.ndarray, longest: np.ndarray) -> None:
    """Wall radii from the distance range of each (type, type, bond class); `rows`: table row of each key.
    Pairs of different molecules (class 0) get no stretch wall: they may part freely."""
    for a, b, c in zip(*np.nonzero(np.isfinite(shortest))):
        model.core_radius[rows[a], rows[b], c] = model.core_margin * float(shortest[a, b, c])
        if c > 0:
            model.stretch_radius[rows[a], rows[b], c] = float(longest[a, b, c]) / model.core_margin


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, 0.0)


@torch.no_grad()
def fit_scale_shift(model, frames, coulomb=None, indices=None, neighbour_frames: int = 20) -> dict:
    """Fit the per-type scale (RMS force component of the type) and shift (least squares of frame energies
    on per-type atom counts, when energies exist; else 0), the walls, and the mean neighbour count if not
    fitted yet (so fine-tuning keeps the trained network's normalisation). `coulomb`: a CoulombCache of
    the same frames, taken off first. `indices`: fit on these frames only (the training split). Types
    already in the table and not in `frames` are kept. Returns the fitted values."""
    if indices is not None:
        frames = frames.subset(indices)
        coulomb = None if coulomb is None else coulomb.subset(indices)
    keys, key_of = np.unique(frames.topology.node_features.astype(np.float64), axis=0, return_inverse=True)
    key_of = key_of.reshape(-1)
    forces = frames.forces.astype(np.float64)
    energies = None if frames.energies is None else frames.energies.astype(np.float64)
    if coulomb is not None:
        forces = forces - coulomb.forces
        energies = None if energies is None else energies - coulomb.energies
    sq_sum = np.array([np.sum(forces[:, key_of == t] ** 2) for t in range(len(keys))])
    n_comp = np.array([forces[:, key_of == t].size for t in range(len(keys))], dtype=np.float64)
    scale = np.sqrt(sq_sum / np.maximum(n_comp, 1))
    overall = math.sqrt(sq_sum.sum() / max(n_comp.sum(), 1))
    scale = np.where(scale > 1e-6 * max(overall, 1e-12), scale, overall)
    counts = np.tile(np.bincount(key_of, minlength=len(keys)).astype(np.float64), (len(frames), 1))
    shift = np.zeros(len(keys)) if energies is None else np.linalg.lstsq(counts, energies, rcond=None)[0]
    if float(model.avg_num_neighbors) <= 0:
        sample = np.unique(np.linspace(0, len(frames) - 1, min(neighbour_frames, len(frames))).astype(int))
        edges = sum(len(neighbor_list(frames.positions[k], frames.cells[k], model.cutoff)[0]) for k in sample)
        model.avg_num_neighbors.fill_(max(edges / (len(sample) * frames.topology.n_atoms), 1.0))
    shortest, longest = distance_range(frames, key_of, len(keys), model.cutoff, model.n_edge_classes)
    _set_walls(model, _store_types(model, keys, scale, shift), shortest, longest)
    # the fallbacks for types not in the table: this data's overall values
    model.force_scale.fill_(overall)
    if energies is not None:
        model.energy_shift.fill_(float(np.sum(energies) / counts.sum()))
    return {
        "type_keys": keys.tolist(),
        "type_scale": scale.tolist(),
        "type_shift": shift.tolist(),
        "avg_num_neighbors": float(model.avg_num_neighbors),
        "shortest_distances": _finite(shortest).tolist(),
        "longest_distances": _finite(longest).tolist(),
    }


@torch.no_grad()
def fit_walls(model, frames, strength: float | None = None, margin: float | None = None) -> dict:
    """Refit only the walls of a trained model from `frames` (its training data), optionally with a new
    strength and margin; the network and its normalisation stay as they are. Types not in the model's
    table are skipped; pairs not in `frames` keep the walls they had. Returns {"shortest_distances",
    "longest_distances"} per key in table order."""
    if strength is not None:
        model.hyper["core_strength"] = float(strength)
    if margin is not None:
        if not 0 < margin <= 1:
            raise ValueError(f"the wall margin must be in (0, 1], got {margin}")
        model.hyper["core_margin"] = float(margin)
    features = torch.as_tensor(frames.topology.node_features, dtype=model.type_keys.dtype)
    table_row, known = model.type_rows(features)
    if not bool(known.any()):
        raise ValueError("none of these frames' atom types is in the model's type table")
    # one key per table row, so the distance table is indexed by row (unknown types: a spare last row)
    key_of = np.where(known.numpy(), table_row.numpy(), MAX_TYPES)
    shortest, longest = distance_range(frames, key_of, MAX_TYPES + 1, model.cutoff, model.n_edge_classes)
    shortest, longest = shortest[:MAX_TYPES, :MAX_TYPES], longest[:MAX_TYPES, :MAX_TYPES]
    _set_walls(model, list(range(MAX_TYPES)), shortest, longest)
    n = int(model.n_types)
    return {
        "shortest_distances": _finite(shortest)[:n, :n].tolist(),
        "longest_distances": _finite(longest)[:n, :n].tolist(),
    }
