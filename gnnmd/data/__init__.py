"""Frames read from LAMMPS output, periodic graphs built from them, and datasets over stored frames."""

from gnnmd.data.dataset import FrameDataset, make_loader, split_indices
from gnnmd.data.frames import Frames, Topology, load_frames
from gnnmd.data.graphs import EDGE_CLASSES, build_graph, neighbor_list
from gnnmd.data.reader import DataError, read_lammps, read_run

__all__ = [
    "EDGE_CLASSES",
    "DataError",
    "FrameDataset",
    "Frames",
    "Topology",
    "build_graph",
    "load_frames",
    "make_loader",
    "neighbor_list",
    "read_lammps",
    "read_run",
    "split_indices",
]
