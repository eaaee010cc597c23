"""The LAMMPS inputs gnnmd runs (plain LAMMPS files; installed with the package as gnnmd.lammps_inputs)."""
