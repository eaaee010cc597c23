"""Labels for new frames from the system's own force field: a LAMMPS `rerun` of chosen frames of a dump
(positions and box as they are) writes their reference forces and potential energies in the layout of a
`gnnmd generate` segment (system.data, frames.lammpstrj, energy.txt), so a dataset can list it.

Here the reference is LAMMPS itself, so a label costs milliseconds: what a DFT code is in DP-GEN-style
active learning. The same reruns give each frame's virial, the reference of `gnnmd evaluate --stress` and
the targets of a stress term in training (`cached_reference_virials`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from gnnmd.data import ReferenceVirials, load_frames, reference_virial_cache
from gnnmd.data.reader import read_manifest
from gnnmd.files import atomic_write_text, file_sha256
from gnnmd.lammps.engine import lammps_input, lammps_path, load_system_commands, start_lammps
from gnnmd.units import NKTV2P_REAL, VOIGT_COLUMNS, VOIGT_ROWS


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


def reference_virials(data_dir, work) -> np.ndarray:
    """The virial (F, 3, 3, kcal/mol) of every frame of a gnnmd dataset under its own force field: a LAMMPS
    rerun of each segment's dump with `compute pressure NULL virial` (the virial part of the pressure
    tensor, times the volume). `work` holds the reruns' outputs."""
    from gnnmd.lammps.md_reference import dataset_forcefield

    data_dir, work = Path(data_dir), Path(work)
    forcefield, virials = dataset_forcefield(data_dir), []
    for k, segment in enumerate(read_manifest(data_dir)["segments"]):
        out = work / f"segment_{k:03d}"
        out.mkdir(parents=True, exist_ok=True)
        lmp = start_lammps(log=out / "log.lammps")
        try:
            lmp.commands_list(
                load_system_commands(data_dir / segment["data_file"], forcefield)
                + [
                    "compute virial all pressure NULL virial",
                    "variable volume equal vol",
                    "fix virial all ave/time 1 1 1 c_virial[1] c_virial[2] c_virial[3] c_virial[4] c_virial[5] "
                    f"c_virial[6] v_volume file {lammps_path(out / 'virial.txt')}",
                    f"rerun {lammps_path(data_dir / segment['dump_file'])} dump x y z box yes",
                ]
            )
        finally:
            lmp.close()
        table = np.loadtxt(out / "virial.txt", comments="#", ndmin=2)  # step, pxx pyy pzz pxy pxz pyz, volume
        pressure = table[:, 1:7] * table[:, 7:8] / NKTV2P_REAL
        tensors = np.zeros((len(table), 3, 3))
        tensors[:, VOIGT_ROWS, VOIGT_COLUMNS] = pressure
        tensors[:, VOIGT_COLUMNS, VOIGT_ROWS] = pressure
        virials.append(tensors)
    return np.concatenate(virials)


def cached_reference_virials(data_dir) -> ReferenceVirials:
    """The reference virials of every frame of a `gnnmd generate` dataset, the targets of a stress term in
    training (`gnnmd train --stress-weight`): read from the dataset folder (virials_<hash>.npz, see
    gnnmd.data.virial_cache) when its force field computed them, else computed by `reference_virials`, the
    LAMMPS reruns writing into a temporary folder that is removed afterwards, and stored there, once per
    dataset. A dataset without a force field to rerun (`gnnmd import`) is a ValueError."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(
            f"{data_dir}: the virials of a stress term come from a rerun of a dataset folder; not a folder"
        )
    forcefield = _rerun_forcefield(data_dir)
    frames = load_frames(data_dir)
    source = f"LAMMPS rerun with {forcefield} (sha256 {file_sha256(lammps_input(forcefield))})"

    def compute() -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="gnnmd-virials-") as work:
            return reference_virials(data_dir, work)

    return reference_virial_cache(frames, data_dir, source, compute)


def _rerun_forcefield(data_dir: Path) -> str:
    """The force field a dataset was made with, or a ValueError saying that it has none to rerun with."""
    from gnnmd.lammps.md_reference import dataset_forcefield

    manifest = read_manifest(data_dir)
    try:
        if isinstance(manifest.get("protocol"), dict):
            return dataset_forcefield(data_dir)
    except KeyError:
        pass
    raise ValueError(
        f"{data_dir / 'manifest.json'}: names no force field to rerun the frames with (a dataset of "
        f"{'gnnmd import' if manifest.get('source') == 'import' else 'unknown origin'}), so it has no reference "
        "virials for --stress-weight; only `gnnmd generate` datasets have them"
    )
