"""A CG prior kept under a learned correction, as CGnet does (Wang et al., ACS Cent. Sci. 5, 755 (2019)):
the force-matched force field of `gnnmd coarse-grain fit` stays in MD, and a GNN learns only what it
misses, the residual (mapped forces minus the prior's). The prior's repulsion keeps CG MD from
collapsing where the network has seen no data (overlapping sites).

The prior's forces and energies are LAMMPS' own, from a rerun of the frames under the fit's cg.ff, so
the residual the network learns is exactly what MD adds it to. The prior travels self-contained (its
commands and the text of its tables) in the residual dataset's manifest and from there in every
checkpoint trained on it; MD writes the tables into its run folder, so moving the fit breaks nothing."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from gnnmd import __version__
from gnnmd.data.dataset_folder import dataset_target, write_dataset
from gnnmd.data.forcefield import STYLES, ForceField
from gnnmd.data.frames import Frames
from gnnmd.data.importing import _finish, write_segment
from gnnmd.data.reader import DataError, read_lammps, read_manifest
from gnnmd.files import atomic_write_text
from gnnmd.lammps.engine import lammps_path, start_lammps

CG_SOURCE = "coarse-grain"  # the manifest "source" of a mapped CG dataset
RESIDUAL_SOURCE = "coarse-grain-residual"  # ... of its residual under a prior
PRIOR_FOLDER = "prior"  # where an MD run writes the prior's tables (inside its output folder)


def _table_words(force_field: ForceField):
    """(command index, word index) of every table file a `pair_style table` prior names: its pair_coeff
    commands read `pair_coeff I J FILE KEYWORD [CUTOFF]`. Other pair styles take no files."""
    if force_field.pair_style != "table":
        return []
    return [(k, 3) for k, c in enumerate(force_field.commands) if c.split()[0] == "pair_coeff" and len(c.split()) > 4]


def prior_record(fit_dir) -> dict:
    """The fit in `fit_dir` as a self-contained prior: its cg.ff as ForceField.to_dict, the text of every
    table it names (keyed by the path as written there; a table missing at that path is looked for in
    `fit_dir`, where a moved fit keeps it) and the fit folder."""
    fit_dir = Path(os.path.abspath(fit_dir))
    force_field = ForceField.read(fit_dir / "cg.ff")
    tables = {}
    for k, w in _table_words(force_field):
        written = force_field.commands[k].split()[w]
        found = Path(written) if Path(written).is_absolute() else fit_dir / written
        if not found.is_file():
            found = fit_dir / Path(written).name
        try:
            tables[written] = found.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{fit_dir / 'cg.ff'}: cannot read its table {written} ({err})") from None
    return {"force_field": force_field.to_dict(), "tables": tables, "fit": str(fit_dir)}


def _table_names(prior: dict) -> dict[str, str]:
    """A plain file name for each of the prior's tables (its own name, numbered if two share one)."""
    names = {}
    for k, written in enumerate(prior["tables"]):
        name = Path(written).name
        names[written] = name if name not in names.values() else f"{k}_{name}"
    return names


def prior_force_field(prior: dict, folder) -> ForceField:
    """The prior's force field with its pair_coeff commands reading the tables from `folder`
    (write_prior_tables writes them there)."""
    force_field = ForceField.from_dict(prior["force_field"], "the CG prior")
    commands, names = list(force_field.commands), _table_names(prior)
    for k, w in _table_words(force_field):
        words = commands[k].split()
        if words[w] not in names:
            raise DataError(f"the CG prior's `{commands[k]}` names a table it does not carry")
        words[w] = lammps_path(Path(folder) / names[words[w]])
        commands[k] = " ".join(words)
    return ForceField(tuple(commands), force_field.source, force_field.units)


def write_prior_tables(prior: dict, folder) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for written, name in _table_names(prior).items():
        atomic_write_text(folder / name, prior["tables"][written])


def prior_cutoff(prior: dict) -> float:
    """The prior's pair reach (A): a table's cutoff on its pair_coeff, else the pair style's cutoffs."""
    force_field = ForceField.from_dict(prior["force_field"], "the CG prior")
    reach = [float(force_field.commands[k].split()[5]) for k, _ in _table_words(force_field)
             if len(force_field.commands[k].split()) > 5]  # fmt: skip
    reach += [c for c in force_field.pair_cutoffs if c is not None]
    return max(reach, default=0.0)


def prior_system_commands(data_file, force_field: ForceField, topology) -> list[str]:
    """Load the system under the prior alone: its styles, the data file without its coefficient sections
    (a CG dataset's data file has zero Pair Coeffs that a table style cannot take; the prior gives every
    coefficient), then its coefficients; bonds and angles it has no style for are zero."""
    styles = [c for c in force_field.commands if c.split()[0] in STYLES]
    rest = [c for c in force_field.commands if c.split()[0] not in STYLES]
    commands = ["units real", "atom_style full", "boundary p p p", *styles,
                f"read_data {lammps_path(data_file)} nocoeff", *rest]  # fmt: skip
    named = {c.split()[0] for c in force_field.commands}
    if len(topology.bonds) and "bond_style" not in named:
        commands += ["bond_style zero", "bond_coeff *"]
    if len(topology.angles) and "angle_style" not in named:
        commands += ["angle_style zero", "angle_coeff *"]
    return commands + ["neigh_modify every 1 delay 0 check yes"]


def prior_frames(data_file, dump_file, force_field: ForceField, topology, work) -> Frames:
    """The frames of `dump_file` (of the system in `data_file`, `topology`) with the prior's forces and
    potential energies: a LAMMPS rerun (positions and box as they are), as label_frames does for a reference."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    dump, energy = work / "prior.lammpstrj", work / "prior_energy.txt"
    lmp = start_lammps(log=work / "log.lammps")
    try:
        lmp.commands_list(
            prior_system_commands(data_file, force_field, topology)
            + [
                f"dump prior all custom 1 {lammps_path(dump)} id type x y z fx fy fz",
                "dump_modify prior sort id format float %.10g",
                f'fix energies all ave/time 1 1 1 c_thermo_pe file {lammps_path(energy)} format " %.10g"',
                f"rerun {lammps_path(dump_file)} dump x y z box yes",
            ]
        )
    except Exception as err:
        raise RuntimeError(f"{dump_file}: LAMMPS could not rerun it under the CG prior ({err}; see {work})") from err
    finally:
        lmp.close()
    return read_lammps(data_file, dump, energy)


def _residual(mapped: Frames, prior: Frames, where) -> Frames:
    """Mapped minus prior, once the rerun is seen to hold the same frames (positions up to wrapping)."""
    same = np.array_equal(mapped.timesteps, prior.timesteps)
    if same:
        shift = np.einsum("fnj,fjk->fnk", prior.positions.astype(np.float64) - mapped.positions,
                          np.linalg.inv(mapped.cells.astype(np.float64)))  # fmt: skip
        same = np.abs(shift - np.round(shift)).max() < 1e-5
    if not same:
        raise RuntimeError(f"{where}: the prior's rerun does not hold the dataset's frames")
    energies = None if mapped.energies is None else mapped.energies - prior.energies
    forces = (mapped.forces.astype(np.float64) - prior.forces).astype(np.float32)
    return Frames(mapped.topology, mapped.positions, forces, mapped.cells, energies, mapped.timesteps, mapped.segments)


def residual_dataset(cg_dir, fit_dir, out, overwrite: bool = False) -> dict:
    """`gnnmd coarse-grain residual`: the CG dataset `cg_dir` with forces (and energies) minus those of the
    prior in `fit_dir` (LAMMPS reruns, see prior_frames), written to `out` as coarse_grain writes a CG
    dataset; the manifest carries the prior (prior_record). Returns the manifest."""
    cg_dir = Path(cg_dir)
    manifest = read_manifest(cg_dir)
    if manifest.get("source") != CG_SOURCE:
        what = "already a residual" if manifest.get("source") == RESIDUAL_SOURCE else "not a CG dataset"
        raise ValueError(f"{cg_dir}: {what}; give the CG dataset of `gnnmd coarse-grain --mapping`")
    prior = prior_record(fit_dir)
    out = dataset_target(out, overwrite)

    def fill(work: Path) -> dict:
        segments, sums = [], np.zeros(3)
        with tempfile.TemporaryDirectory(dir=work.parent, prefix=f".{work.name}.") as scratch:
            force_field = prior_force_field(prior, Path(scratch) / PRIOR_FOLDER)
            write_prior_tables(prior, Path(scratch) / PRIOR_FOLDER)
            for k, entry in enumerate(manifest["segments"]):
                data_file, dump_file = cg_dir / entry["data_file"], cg_dir / entry["dump_file"]
                energy_file = cg_dir / entry["energy_file"] if entry.get("energy_file") else None
                mapped = read_lammps(data_file, dump_file, energy_file, segment=k)
                prior_part = prior_frames(
                    data_file, dump_file, force_field, mapped.topology, Path(scratch) / f"rerun_{k:03d}"
                )
                part = _residual(mapped, prior_part, dump_file)
                sums += [np.sum(mapped.forces.astype(np.float64) ** 2), np.sum(part.forces.astype(np.float64) ** 2),
                         mapped.forces.size]  # fmt: skip
                written = write_segment(part, data_file, work / Path(entry["data_file"]).parent.name)
                segments.append({**entry, **written})
        check = {"rms_mapped_force": math.sqrt(sums[0] / sums[2]), "rms_residual_force": math.sqrt(sums[1] / sums[2])}
        return _finish(work, _manifest(cg_dir, manifest, prior, segments, check))

    return write_dataset(out, fill)


def _manifest(cg_dir: Path, source: dict, prior: dict, segments: list, check: dict) -> dict:
    return {
        **source,
        "source": RESIDUAL_SOURCE,
        "gnnmd_version": __version__,
        "residual_of": {"dataset": os.path.abspath(cg_dir), "fit": prior["fit"]},
        "force_map": f"{source.get('force_map', 'mapped forces')}, minus the CG prior's (a LAMMPS rerun of its cg.ff)",
        "prior": prior,
        "residual": {**check, "relative": check["rms_residual_force"] / max(check["rms_mapped_force"], 1e-30)},
        "segments": segments,
    }
