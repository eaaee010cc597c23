"""Frames read from LAMMPS output, periodic graphs built from them, and datasets over stored frames."""

from gnnmd.data.coulomb_cache import CoulombCache, coulomb_cache
from gnnmd.data.dataset import (
    FrameDataset,
    choose_frames,
    chosen_frame_indices,
    make_loader,
    run_split,
    split_indices,
)
from gnnmd.data.frames import DataWarning, Frames, make_whole, replicate
from gnnmd.data.frames_cache import load_frames
from gnnmd.data.graphs import EDGE_CLASSES, GraphBuilder, build_graph, neighbor_list
from gnnmd.data.reader import DataError, read_lammps, read_run, read_topology
from gnnmd.data.topology import Topology
from gnnmd.data.virial_cache import ReferenceVirials, read_reference_virials, reference_virial_cache

__all__ = [
    "EDGE_CLASSES",
    "CoulombCache",
    "DataError",
    "DataWarning",
    "FrameDataset",
    "Frames",
    "GraphBuilder",
    "ReferenceVirials",
    "Topology",
    "build_graph",
    "choose_frames",
    "chosen_frame_indices",
    "coulomb_cache",
    "load_frames",
    "make_loader",
    "make_whole",
    "neighbor_list",
    "read_lammps",
    "read_reference_virials",
    "read_run",
    "read_topology",
    "reference_virial_cache",
    "replicate",
    "run_split",
    "split_indices",
]
