"""gnnmd works in LAMMPS `real` units: kcal/mol, Angstrom, fs, e, g/mol."""

# e^2/A -> kcal/mol (LAMMPS force->qqr2e in real units)
COULOMB_CONSTANT = 332.06371
