"""Plain LAMMPS, the reference for a model's MD (md_model.run_md): the same run (MDSettings: start,
integrator, dump and thermo.txt) with the system's own force field in place of a model."""

from __future__ import annotations

from pathlib import Path

from gnnmd.data.reader import DataError, read_topology
from gnnmd.lammps.engine import load_system_commands, start_lammps
from gnnmd.lammps.md_commands import dynamics_commands, set_up, timed_run
from gnnmd.lammps.md_output import check_out, density, fresh_folder, run_record, write_summary
from gnnmd.lammps.md_settings import MDSettings
from gnnmd.lammps.thermo import end_outputs_before, thermo_statistics


def run_lammps_md(data_file, forcefield, settings: MDSettings, out, threads: int = 1, overwrite: bool = False) -> dict:
    """The MD of `settings` with the force field `forcefield` (a ForceField, or a lammps_inputs/ file name;
    see gnnmd.lammps.label.reference_force_field) on `threads` threads (OPENMP styles). Writes the dump, log, thermo.txt and summary.json into `out` (md_output:
    complete, or not at all); the summary has run_md's statistics and speed, and like run_md's, the
    failure (`failed_at_step`, `failure`: LAMMPS' own error or a temperature jump)."""
    data_file, out = Path(data_file), Path(out)
    check_out(out, overwrite, data_file)
    with fresh_folder(out) as work:
        lmp = start_lammps(log=work / "log.lammps", threads=threads)
        set_up(lmp, load_system_commands(data_file, forcefield) + dynamics_commands(settings, work, False), data_file,
               out, settings)  # fmt: skip
        n_atoms = int(lmp.get_natoms())
        seconds, failure = timed_run(lmp, settings.steps)
        failed_at, failure = failure or (None, None)
        end_outputs_before(work, failed_at)
        statistics = thermo_statistics(work / "thermo.txt", n_atoms, failed_at, True, settings.ensemble,
                                       settings.temperature)  # fmt: skip
        summary = {
            "forcefield": getattr(forcefield, "source", forcefield),
            "system": str(data_file),
            **run_record(n_atoms, settings, failed_at, seconds),
            "threads": threads,
            **statistics,
            "mean_density_g_cm3": _file_density(data_file, statistics["mean_volume"]),
            "failed_at_step": failed_at,
            "failure": failure,
        }
        write_summary(work, summary)
    return summary


def _file_density(data_file: Path, volume: float | None) -> float | None:
    """The density of a data file's system; None for one gnnmd cannot read without its Pair Coeffs (a CG
    system for pair_style table, whose coefficients come from the force field)."""
    try:
        return density(read_topology(data_file), volume)
    except DataError:
        return None
