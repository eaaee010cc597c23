"""Labels for new frames from the system's own force field: a LAMMPS `rerun` of chosen frames of a dump
(positions and box as they are) writes their reference forces and potential energies in the layout of a
`gnnmd generate` segment (system.data, frames.lammpstrj, energy.txt), so a dataset can list it.

Here the reference is LAMMPS itself, so a label costs milliseconds: what a DFT code is in DP-GEN-style
active learning."""

from __future__ import annotations

import shutil
from pathlib import Path

from gnnmd.files import atomic_write_text
from gnnmd.lammps.engine import lammps_path, load_system_commands, start_lammps


def dump_timesteps(dump_file) -> list[int]:
    """The timestep of every frame of a LAMMPS text dump, in order."""
    steps, previous = [], ""
    with open(dump_file) as file:
        for line in file:
            if previous.startswith("ITEM: TIMESTEP"):
                steps.append(int(line.split()[0]))
            previous = line
    return steps


def copy_frames(dump_file, timesteps, out) -> list[int]:
    """Write the frames of `dump_file` at `timesteps` (in the dump's order) to `out`; their timesteps."""
    wanted, kept = {int(s) for s in timesteps}, []
    frames, current, keep = [], [], False
    with open(dump_file) as file:
        lines = file.readlines()
    for k, line in enumerate(lines):
        if line.startswith("ITEM: TIMESTEP"):
            if keep:
                frames.append("".join(current))
            step = int(lines[k + 1].split()[0])
            keep, current = step in wanted, []
            if keep:
                kept.append(step)
        current.append(line)
    if keep:
        frames.append("".join(current))
    missing = wanted.difference(kept)
    if missing:
        raise ValueError(f"{dump_file}: has no frame at timestep(s) {sorted(missing)[:5]}")
    atomic_write_text(out, "".join(frames))
    return kept


def label_frames(data_file, forcefield: str, dump_file, timesteps, out) -> dict:
    """Reference forces and energies of the frames of `dump_file` at `timesteps`, with the force field
    `forcefield` (a file in lammps_inputs/) of the system in `data_file`: writes out/system.data (a copy),
    out/frames.lammpstrj (id mol type q x y z fx fy fz) and out/energy.txt (timestep, potential energy,
    kcal/mol), the three files of a dataset segment. Returns the segment's manifest entry."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = out / "chosen.lammpstrj"
    kept = copy_frames(dump_file, timesteps, chosen)
    shutil.copyfile(data_file, out / "system.data")
    lmp = start_lammps(log=out / "log.lammps")
    try:
        lmp.commands_list(
            load_system_commands(out / "system.data", forcefield)
            + [
                "thermo_style custom step pe",
                f"dump labels all custom 1 {lammps_path(out / 'frames.partial')} id mol type q x y z fx fy fz",
                "dump_modify labels sort id format float %.10g",
                f"fix energies all ave/time 1 1 1 c_thermo_pe file {lammps_path(out / 'energy.partial')} "
                'format " %.10g"',
                f"rerun {lammps_path(chosen)} dump x y z box yes",
            ]
        )
    except Exception as err:
        raise RuntimeError(f"{dump_file}: LAMMPS could not label its frames ({err}; see {out / 'log.lammps'})") from err
    finally:
        lmp.close()
    (out / "frames.partial").replace(out / "frames.lammpstrj")  # complete: LAMMPS has closed them
    (out / "energy.partial").replace(out / "energy.txt")
    chosen.unlink()
    return {
        "data_file": str(out / "system.data"),
        "dump_file": str(out / "frames.lammpstrj"),
        "energy_file": str(out / "energy.txt"),
        "timesteps": kept,
        "forcefield": forcefield,
    }
