"""gnnmd: graph neural network force fields learned from LAMMPS molecular dynamics."""

__version__ = "0.1.0"
