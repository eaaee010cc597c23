"""Lennard-Jones liquids made by LAMMPS, optionally charged: the unseen species a corresponding-states
model is checked on zero-shot (tests/test_zero_shot.py, benchmarks/zero_shot.py)."""

from __future__ import annotations

from pathlib import Path

from gnnmd.lammps.engine import lammps_path, start_lammps
from gnnmd.units import BOLTZMANN  # kcal/mol/K

REDUCED_DENSITY = 0.84  # rho sigma^3 of a dense LJ liquid (argon near its triple point: 0.84-0.87)


def fcc_lattice(sigma: float, reduced_density: float = REDUCED_DENSITY) -> float:
    """The fcc lattice constant (A) that puts 4 atoms per cell at `reduced_density` for this sigma."""
    return sigma * (4.0 / reduced_density) ** (1.0 / 3.0)


def reduced_temperature_to_kelvin(reduced: float, epsilon: float) -> float:
    return reduced * epsilon / BOLTZMANN


def lennard_jones_liquid(
    folder: Path,
    species: list[tuple],
    temperature: float,
    lattice: float,
    frames: int = 10,
    seed: int = 7,
    cutoff: float = 10.0,
) -> tuple[Path, Path]:
    """A liquid of 256 atoms by LAMMPS (lj/cut `cutoff` A with arithmetic mixing, NVT 6 ps from an fcc lattice,
    then `frames` frames 200 fs apart): species are (eps, sigma) or (eps, sigma, charge); with charges the
    pair style is lj/cut/coul/long with PPPM. Two species split the atoms exactly in half.
    Returns its data file (with the pair coefficients) and the dump of positions and forces."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    charged = any(len(s) > 2 and s[2] for s in species)
    pair = f"lj/cut/coul/long {cutoff}" if charged else f"lj/cut {cutoff}"
    commands = ["units real", "atom_style full", "boundary p p p", f"lattice fcc {lattice}",
                "region box block 0 4 0 4 0 4", f"create_box {len(species)} box", "create_atoms 1 box",
                f"pair_style {pair}", "pair_modify mix arithmetic"]  # fmt: skip
    if len(species) == 2:
        commands.append("set type 1 type/ratio 2 0.5 4321")
    for t, (epsilon, sigma, *charge) in enumerate(species, start=1):
        commands += [f"mass {t} 39.948", f"pair_coeff {t} {t} {epsilon} {sigma}"]
        if charge:
            commands.append(f"set type {t} charge {charge[0]}")
    if charged:
        commands += ["kspace_style pppm 1e-5"]
    dump = lammps_path(folder / "frames.lammpstrj")
    commands += [f"velocity all create {temperature} {seed} dist gaussian",
                 f"fix nvt all nvt temp {temperature} {temperature} 100", "timestep 2.0", "run 3000",
                 f"dump frames all custom 100 {dump} id type q x y z fx fy fz", f"run {100 * (frames - 1)}",
                 f"write_data {lammps_path(folder / 'system.data')} pair ii"]  # fmt: skip
    lmp = start_lammps(log=folder / "log.lammps")
    lmp.commands_list(commands)
    lmp.close()
    return folder / "system.data", folder / "frames.lammpstrj"
