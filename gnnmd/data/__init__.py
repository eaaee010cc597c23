"""Frames read from LAMMPS output, periodic graphs built from them, and datasets over stored frames."""

from gnnmd.data.coulomb_cache import CoulombCache, coulomb_cache
from gnnmd.data.dataset import FrameDataset, choose_frames, make_loader, run_split, split_indices
from gnnmd.data.frames import DataWarning, Frames, make_whole, replicate
from gnnmd.data.frames_cache import load_frames
from gnnmd.data.graphs import EDGE_CLASSES, GraphBuilder, build_graph, neighbor_list
from gnnmd.data.reader import DataError, read_lammps, read_run, read_topology
from gnnmd.data.topology import Topology

__all__ = [
    "EDGE_CLASSES",
    "CoulombCache",
    "DataError",
    "DataWarning",
    "FrameDataset",
    "Frames",
    "GraphBuilder",
    "Topology",
    "build_graph",
    "choose_frames",
    "coulomb_cache",
    "load_frames",
    "make_loader",
    "make_whole",
    "neighbor_list",
    "read_lammps",
    "read_run",
    "read_topology",
    "replicate",
    "run_split",
    "split_indices",
]
