"""`gnnmd import`: data a user already has, as a gnnmd dataset every command takes.

- LAMMPS runs: a data file (topology, charges, Pair Coeffs) and dumps with forces; energies from a
  per-frame file (timestep, potential energy) or the thermo table of a log.lammps (Step and PotEng), else
  none (forces only).
- extxyz, or anything ASE reads, with energies and forces per frame; the per-atom parameters (q, eps,
  sigma) and bonds from a LAMMPS data file of the system, whose atom order the frames must follow.

gnnmd works in LAMMPS `real` units (kcal/mol, A). `metal` input (eV) is converted, and the manifest says
so; other unit systems are refused. A LAMMPS run's units are what its data file's header (`units = ...`,
as write_data writes it), its log's `units` command and `units=` say, which must agree; where none says
anything, real is assumed with a DataWarning, and the manifest records it ("units_source": "assumed").
Each dump (or trajectory) becomes one segment, written afresh into the dataset folder (data file, dump,
energy file in real units), so the dataset does not depend on the files it came from, and those are never
touched."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from gnnmd import __version__
from gnnmd.data.dataset_folder import dataset_target, write_dataset
from gnnmd.data.forcefield import ForceField
from gnnmd.data.frames import DataWarning, Frames
from gnnmd.data.reader import KCAL_PER_EV, DataError, declared_units, read_lammps, read_run, read_topology

TO_KCAL = {"real": 1.0, "metal": KCAL_PER_EV}  # energy unit of each accepted unit system, in kcal/mol


def check_units(units: str, source) -> float:
    """The factor from `units`' energies to kcal/mol; other unit systems are refused."""
    if units not in TO_KCAL:
        raise DataError(f"{source}: units {units!r} are not supported; gnnmd takes real (its own) or metal (converted)")
    return TO_KCAL[units]


def log_units(log_file) -> str | None:
    """The unit system the `units` command of a LAMMPS log set (its last one), or None if it has none."""
    found = None
    for line in Path(log_file).read_text(errors="replace").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[0] == "units":
            found = words[1]
    return found


def run_units(data_file: Path, log=None, given: str | None = None) -> tuple[str, str]:
    """(units, where they come from) of a LAMMPS run: the data file's header, the log's `units` command and
    `given` (--units) must agree where they say anything; where none does, real is assumed, with a warning."""
    said = [("data file", data_file, declared_units(data_file) if data_file.is_file() else None),
            ("log", log, log_units(log) if log else None), ("--units", "--units", given)]  # fmt: skip
    said = [(source, where, units) for source, where, units in said if units]
    for _, where, units in said:
        check_units(units, where)
    if len({units for _, _, units in said}) > 1:
        raise DataError("units disagree: " + ", ".join(f"{where} says {units}" for _, where, units in said))
    if not said:
        also = f" nor in {log}" if log else ""
        warnings.warn(f"{data_file}: no units in its header{also}; assumed real (kcal/mol, A)", DataWarning, 3)
        return "real", "assumed"
    return said[0][2], said[0][0]


def thermo_energies(log_file) -> dict[int, float]:
    """Potential energy per step from the thermo tables of a LAMMPS log: its PotEng column, or E_pair +
    E_mol (the default thermo style)."""
    energies, columns = {}, None
    for line in Path(log_file).read_text(errors="replace").splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            columns = words if "PotEng" in words or {"E_pair", "E_mol"} <= set(words) else None
            continue
        if columns is None or len(words) != len(columns):
            columns = None if words[:2] == ["Loop", "time"] else columns
            continue
        try:
            row = dict(zip(columns, map(float, words)))
        except ValueError:
            columns = None
            continue
        energies[int(row["Step"])] = row["PotEng"] if "PotEng" in row else row["E_pair"] + row["E_mol"]
    if not energies:
        raise DataError(f"{log_file}: no thermo table with Step and PotEng (or E_pair and E_mol) columns")
    return energies


def _converted_data_file(data_file: Path, out: Path, factor: float) -> None:
    """Copy a data file into real units: Pair Coeffs' epsilon (first coefficient) times `factor`, and the
    header's units. Only the Lennard-Jones epsilon carries energy among what gnnmd reads."""
    lines, section = Path(data_file).read_text().splitlines(), None
    for k, raw in enumerate(lines):
        if k == 0:
            lines[0] = re.sub(r"units\s*=\s*\w+", "units = real", raw) if "units" in raw else raw
            continue
        words = raw.split("#", 1)[0].split()
        if words and words[0][0].isalpha():
            section = " ".join(words[:2])
        elif section == "Pair Coeffs" and len(words) >= 3:
            lines[k] = f"{words[0]} {float(words[1]) * factor:.10g} " + " ".join(words[2:])
        elif section == "PairIJ Coeffs" and len(words) >= 4:
            lines[k] = f"{words[0]} {words[1]} {float(words[2]) * factor:.10g} " + " ".join(words[3:])
    out.write_text("\n".join(lines) + "\n")


def write_segment(frames: Frames, data_file: Path, folder: Path, factor: float = 1.0) -> dict:
    """One dataset segment in `folder` from frames in real units: system.data (a copy of `data_file`, its
    energies converted by `factor`), frames.lammpstrj and energy.txt (if the frames have energies)."""
    folder.mkdir(parents=True)
    if factor == 1.0:
        shutil.copyfile(data_file, folder / "system.data")
    else:
        _converted_data_file(data_file, folder / "system.data", factor)
    write_dump(frames, folder / "frames.lammpstrj")
    segment = {"data_file": f"{folder.name}/system.data", "dump_file": f"{folder.name}/frames.lammpstrj",
               "energy_file": None}  # fmt: skip
    if frames.energies is not None:
        rows = "".join(f"{int(t)} {e:.10g}\n" for t, e in zip(frames.timesteps, frames.energies))
        (folder / "energy.txt").write_text("# timestep potential energy (kcal/mol)\n" + rows)
        segment["energy_file"] = f"{folder.name}/energy.txt"
    return segment


def write_dump(frames: Frames, path: Path) -> None:
    """A LAMMPS text dump (id mol type q x y z fx fy fz) of the frames; the cell must be LAMMPS' own
    (lower triangular: a along x, b in the xy plane)."""
    top = frames.topology
    ids = np.arange(1, top.n_atoms + 1)
    types = np.asarray(top.table_type_ids)[top.types]
    with open(path, "w") as out:
        for k in range(len(frames)):
            cell = frames.cells[k].astype(np.float64)
            if np.abs(cell[np.triu_indices(3, 1)]).max() > 1e-8:
                raise DataError(
                    f"{path}: frame {k} has a cell LAMMPS cannot hold (not lower triangular): {cell.tolist()}"
                )
            out.write(f"ITEM: TIMESTEP\n{int(frames.timesteps[k])}\nITEM: NUMBER OF ATOMS\n{top.n_atoms}\n")
            out.write(_box_lines(cell))
            out.write("ITEM: ATOMS id mol type q x y z fx fy fz\n")
            table = np.column_stack([ids, top.molecules, types, top.charges, frames.positions[k], frames.forces[k]])
            np.savetxt(out, table, fmt=["%d", "%d", "%d", "%.6g"] + ["%.10g"] * 6)


def _box_lines(cell: np.ndarray) -> str:
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = cell
    if xy == 0 and xz == 0 and yz == 0:
        return f"ITEM: BOX BOUNDS pp pp pp\n0 {lx:.10g}\n0 {ly:.10g}\n0 {lz:.10g}\n"
    xlo, xhi = min(0.0, xy, xz, xy + xz), lx + max(0.0, xy, xz, xy + xz)
    return (f"ITEM: BOX BOUNDS xy xz yz pp pp pp\n{xlo:.10g} {xhi:.10g} {xy:.10g}\n"
            f"{min(0.0, yz):.10g} {ly + max(0.0, yz):.10g} {xz:.10g}\n0 {lz:.10g} {yz:.10g}\n")  # fmt: skip


def _manifest(
    segments: list[dict], sources: dict, units: tuple[str, str], frames: list[Frames], force_field=None
) -> dict:
    units, units_source = units
    converted = units != "real"
    return {
        "force_field": force_field and force_field.to_dict(),
        "source": "import",
        "gnnmd_version": __version__,
        "system": Path(sources.get("data_file") or sources.get("topology") or "system").stem,
        "imported_from": sources,
        "units": "real",
        "input_units": units,
        "units_source": units_source,  # data file, log, --units, given (extxyz) or assumed (nothing said)
        "converted": f"from {units}: energies and forces times {TO_KCAL[units]:.6f} to kcal/mol" if converted else None,
        "segments": segments,
        "frame_count": int(sum(len(f) for f in frames)),
        "atoms": int(frames[0].topology.n_atoms),
        "type_table": frames[0].topology.type_table(),
    }


def import_lammps(data_file, dumps, out, energies=None, log=None, units: str | None = None,
                  overwrite: bool = False, forcefield=None) -> dict:  # fmt: skip
    """A dataset from LAMMPS runs of one system (see the module's doc); returns its manifest."""
    data_file = Path(data_file)
    units, units_source = run_units(data_file, log, units)
    factor = TO_KCAL[units]
    force_field = reference_force_field(forcefield, log, units)
    topology = read_topology(data_file, units=units)
    by_step = thermo_energies(log) if log else None
    out = dataset_target(out, overwrite)

    def fill(work: Path) -> dict:
        parts, segments = [], []
        for k, dump in enumerate(dumps):
            frames = read_lammps(data_file, dump, energies if energies else None, segment=k, topology=topology)
            if by_step is not None:
                missing = [int(t) for t in frames.timesteps if int(t) not in by_step]
                if missing:
                    raise DataError(f"{log}: no PotEng for step(s) {missing[:5]} of {dump}")
                frames.energies = np.array([by_step[int(t)] for t in frames.timesteps])
            frames = _in_real_units(frames, factor)
            parts.append(frames)
            segments.append(write_segment(frames, data_file, work / f"segment_{k:03d}", factor))
        sources = {"data_file": str(data_file.resolve()), "dumps": [str(Path(d).resolve()) for d in dumps],
                   "energies": energies and str(Path(energies).resolve()), "log": log and str(Path(log).resolve())}  # fmt: skip
        return _finish(work, _manifest(segments, sources, (units, units_source), parts, force_field))

    return write_dataset(out, fill)


def reference_force_field(forcefield, log, units: str) -> ForceField | None:
    """The run's force field: from `forcefield` (an input, include file or log; it must hold one), else
    from the log if it echoes one, else None. Only a real-units force field is kept: gnnmd reruns in real."""
    if forcefield is not None:
        return ForceField.read(forcefield, units)
    if log is None or units != "real":
        return None
    found = ForceField.parse(Path(log).read_text(errors="replace"), str(log), units)
    return found if found.commands else None


def _in_real_units(frames: Frames, factor: float) -> Frames:
    if factor != 1.0:
        frames.forces = (frames.forces * factor).astype(np.float32)
        frames.energies = None if frames.energies is None else frames.energies * factor
    return frames


def _finish(work: Path, manifest: dict) -> dict:
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    read_run(work, progress=False)  # what was written reads back as a dataset (raises if not)
    return manifest


def import_trajectory(path, topology_file, out, units: str = "metal", overwrite: bool = False, forcefield=None) -> dict:
    """A dataset from an extxyz (or any ASE-readable) trajectory with energies and forces, in ASE's eV and
    A by default (`units="metal"`), with its topology from a LAMMPS data file (see the module's doc)."""
    factor = check_units(units, path)
    force_field = None if forcefield is None else ForceField.read(forcefield, "real")
    topology_file = Path(topology_file)
    topology = read_topology(topology_file)
    frames = _frames_of(_read_images(Path(path)), topology, path)
    frames = _in_real_units(frames, factor)
    out = dataset_target(out, overwrite)

    def fill(work: Path) -> dict:
        segment = write_segment(frames, topology_file, work / "segment_000")
        sources = {"trajectory": str(Path(path).resolve()), "topology": str(topology_file.resolve())}
        return _finish(work, _manifest([segment], sources, (units, "given"), [frames], force_field))

    return write_dataset(out, fill)


def _read_images(path: Path) -> list:
    """Every frame ASE reads from `path`; a file it cannot read (binary, another format) is a DataError."""
    from ase.io import read

    if not path.is_file():
        raise DataError(f"{path}: trajectory file not found")
    try:
        images = read(str(path), index=":")
    except Exception as err:  # ASE raises whatever its format's parser meets: a one-line error instead
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise DataError(f"{path}: not a trajectory ASE can read ({type(err).__name__}: {detail})") from err
    if not images:
        raise DataError(f"{path}: no frames")
    return images


def _frames_of(images, topology, path) -> Frames:
    """Frames of ASE images (as read, units unconverted), checked against the topology."""
    names = np.asarray(topology.table_names)[topology.types]
    positions, forces, cells, energies = [], [], [], []
    for k, atoms in enumerate(images):
        where = f"{path}, frame {k}"
        if len(atoms) != topology.n_atoms:
            raise DataError(f"{where}: {len(atoms)} atoms, the topology has {topology.n_atoms}")
        symbols = np.array(atoms.get_chemical_symbols())
        known = ~np.char.startswith(names.astype(str), "type")
        if np.any(symbols[known] != names[known]):
            first = int(np.flatnonzero(symbols[known] != names[known])[0])
            raise DataError(
                f"{where}: atom {first} is {symbols[first]}, the topology's is {names[first]} (same order?)"
            )
        if atoms.calc is None or "forces" not in atoms.calc.results:
            raise DataError(f"{where}: no forces")
        if not all(atoms.pbc) or atoms.cell.rank < 3:
            raise DataError(f"{where}: no periodic cell")
        positions.append(atoms.positions)
        forces.append(atoms.get_forces())
        cells.append(atoms.cell.array)
        energies.append(atoms.calc.results.get("energy", np.nan))
    energies = np.array(energies, dtype=np.float64)
    return Frames(topology=topology, positions=np.array(positions, dtype=np.float32),
                  forces=np.array(forces, dtype=np.float32), cells=np.array(cells, dtype=np.float32),
                  energies=None if np.isnan(energies).any() else energies,
                  timesteps=np.arange(len(images), dtype=np.int64), segments=np.zeros(len(images), dtype=np.int64))  # fmt: skip
