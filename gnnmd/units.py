"""gnnmd works in LAMMPS `real` units: kcal/mol, Angstrom, fs, e, g/mol."""

# e^2/A -> kcal/mol (LAMMPS force->qqr2e in real units)
COULOMB_CONSTANT = 332.06371
NKTV2P_REAL = 68568.415  # LAMMPS real units: atm per (kcal/mol / A^3), pressure = virial / volume * this
# the six components of a symmetric 3x3 tensor in LAMMPS' order (xx, yy, zz, xy, xz, yz): rows, columns
VOIGT_ROWS, VOIGT_COLUMNS = [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]
BOLTZMANN = 0.0019872067  # kcal/mol/K (LAMMPS real units force->boltz)
