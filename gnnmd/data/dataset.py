"""A PyG dataset over stored frames that builds each graph when it is asked for, deterministic
train/validation splits, and the loader."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Dataset
from torch_geometric.loader import DataLoader

from gnnmd.data.frames import ADDED_SEGMENTS, Frames
from gnnmd.data.graphs import GraphBuilder


class FrameDataset(Dataset):
    """Graphs of `frames[indices]` within `cutoff`, built on the fly (cheap with cell lists; caching
    graphs for 10^4 frames would take >10 GB)."""

    def __init__(self, frames: Frames, cutoff: float, indices=None, transform=None):
        super().__init__(transform=transform)
        self.frames = frames
        self.builder = GraphBuilder(frames.topology, cutoff)
        self.frame_indices = np.arange(len(frames)) if indices is None else np.asarray(indices, dtype=np.int64)

    @property
    def cutoff(self) -> float:
        return self.builder.cutoff

    def len(self) -> int:
        return len(self.frame_indices)

    def get(self, idx: int):
        k = int(self.frame_indices[idx])
        energy = None if self.frames.energies is None else self.frames.energies[k]
        data = self.builder(self.frames.positions[k], self.frames.cells[k], self.frames.forces[k], energy)
        data.frame = k
        return data


def batch_frames(batch) -> np.ndarray:
    """The index into the Frames of each graph of a PyG batch (FrameDataset sets `frame`), in batch order:
    how per-frame caches (Coulomb, reference virials) find a batch's rows."""
    return torch.as_tensor(batch.frame).reshape(-1).cpu().numpy()


def split_indices(frames: Frames, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation frame indices.

    Frames of one segment are time-correlated, so with enough segments whole segments go to
    validation; otherwise each segment's last `val_fraction` of frames does. Frames added to the dataset
    later (segment ids from ADDED_SEGMENTS on: active learning) are always training frames, so the
    validation frames stay those of the original segments."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    segments = np.unique(frames.segments[frames.segments < ADDED_SEGMENTS])
    rng = np.random.default_rng(seed)
    n_val_segments = int(round(len(segments) * val_fraction))
    if n_val_segments >= 1:
        val_segments = rng.permutation(segments)[:n_val_segments]
        is_val = np.isin(frames.segments, val_segments)
    else:
        is_val = np.zeros(len(frames), dtype=bool)
        for segment in segments:
            members = np.flatnonzero(frames.segments == segment)
            n_val = max(1, int(round(len(members) * val_fraction)))
            is_val[members[-n_val:]] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def chosen_frame_indices(n_frames: int, max_frames: int | None) -> np.ndarray:
    """The frames `choose_frames` keeps of `n_frames`, as indices: all, or `max_frames` spread evenly."""
    if max_frames is None or max_frames >= n_frames:
        return np.arange(n_frames)
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2 (train and validation), got {max_frames}")
    return np.unique(np.linspace(0, n_frames - 1, max_frames).round().astype(np.int64))


def choose_frames(frames: Frames, max_frames: int | None) -> Frames:
    """All frames, or `max_frames` spread evenly over the whole set (every segment keeps some)."""
    if max_frames is None or max_frames >= len(frames):
        return frames
    return frames.subset(chosen_frame_indices(len(frames), max_frames))


def run_split(frames: Frames, max_frames: int | None, val_fraction: float, split_seed: int):
    """(frames, train indices, validation indices) as a training run with these settings chose them: the
    one definition that training and `gnnmd evaluate --split` share."""
    frames = choose_frames(frames, max_frames)
    train_idx, val_idx = split_indices(frames, val_fraction, split_seed)
    return frames, train_idx, val_idx


def make_loader(dataset: FrameDataset, batch_size: int = 1, shuffle: bool = False, seed: int = 0, **kwargs):
    """PyG DataLoader; shuffling follows `seed` so runs are reproducible."""
    import torch

    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, **kwargs)
