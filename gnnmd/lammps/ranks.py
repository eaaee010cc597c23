"""MD across MPI ranks: what the model's callback adds to LAMMPS' own domain decomposition.

LAMMPS moves the atoms between ranks, keeps the ghost copies current and computes its Coulomb (PPPM) in
parallel; each rank's callback computes the model's share of its atoms (gnnmd.inference.domain). What
LAMMPS cannot do from a callback is send the forces on ghost copies back to the atoms' owners (the
callback runs after its reverse communication), or add up an energy and a virial that fix external takes
as totals. One reduction per step over the ranks does both: every rank adds its forces by global atom id,
its energy share and virial share, and MPI sums them (mpi4py, on the MPI that LAMMPS runs on)."""

from __future__ import annotations

import os

import numpy as np

# how far ghosts must reach beyond the model's L x cutoff: atoms move up to half LAMMPS' neighbour skin
# each between two rebuilds of the ghosts, so two atoms come up to a full skin closer
LAMMPS_SKIN = 2.0


def world():
    """MPI_COMM_WORLD through mpi4py (the communicator LAMMPS runs on when started under mpiexec)."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise RuntimeError("MD on several MPI ranks needs mpi4py (pip install mpi4py)") from err
    return MPI.COMM_WORLD


def mpi_rank() -> int:
    """This process's MPI rank as the launcher set it (mpiexec of MPICH: PMI_RANK; 0 without one)."""
    return int(os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)


def ghost_commands(ghost_reach: float) -> list[str]:
    """LAMMPS settings for a model whose rank shares need ghosts out to `ghost_reach` (A): the
    communication cutoff covers it until the next rebuild, which comes when an atom has moved half the skin."""
    return [
        f"neighbor {LAMMPS_SKIN} bin",
        "neigh_modify every 1 delay 0 check yes",
        f"comm_modify cutoff {ghost_reach + LAMMPS_SKIN + 0.1:.4f}",
    ]


def check_box_for_clusters(cell: np.ndarray, reach: float, source: str) -> None:
    """Each rank's atoms are an open cluster with periodic images as separate atoms: a bonded pair must
    have one image within the model's neighbour reach, so every box width must exceed twice it."""
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(float(np.linalg.det(cell)))
    widths = [volume / float(np.linalg.norm(np.cross(cell[a], cell[b]))) for a, b in ((1, 2), (2, 0), (0, 1))]
    if min(widths) <= 2.0 * reach:
        raise ValueError(
            f"{source}: the box is {min(widths):.2f} A wide, too small for MD across MPI ranks with this "
            f"model (it needs more than {2 * reach:.2f} A, twice the model's cutoff plus skin); run it on one rank"
        )


class RankSum:
    """The step's reduction: forces summed by atom id, and a few numbers (energy, virial, flags) summed."""

    def __init__(self, comm, n_atoms: int):
        self.comm, self.n_atoms = comm, n_atoms
        self.forces = np.zeros((n_atoms, 3))

    def __call__(self, ids: np.ndarray, forces: np.ndarray | None, numbers: np.ndarray):
        """(Forces on every atom of the system, summed numbers); `forces` None adds nothing (a rank that failed)."""
        from mpi4py import MPI

        self.forces.fill(0.0)
        if forces is not None:  # a small box can hold several copies of one atom: bincount adds them all
            for k in range(3):
                self.forces[:, k] = np.bincount(ids, weights=forces[:, k], minlength=self.n_atoms)
        numbers = np.ascontiguousarray(numbers, dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, self.forces, op=MPI.SUM)
        self.comm.Allreduce(MPI.IN_PLACE, numbers, op=MPI.SUM)
        return self.forces, numbers
