"""Plain LAMMPS, the reference for a model's MD (md_model.run_md), and MD with any force-field file (a CG
fit's cg.ff; `gnnmd md --forcefield`): the same run (MDSettings: start, integrator, dump and thermo.txt)
with a LAMMPS force field in place of a model, on one MPI rank or several (mpiexec -n K)."""

from __future__ import annotations

from pathlib import Path

from gnnmd.data.reader import DataError, read_topology
from gnnmd.lammps.engine import lammps_world_size, load_system_commands, start_lammps
from gnnmd.lammps.md_commands import dynamics_commands, set_up, timed_run
from gnnmd.lammps.md_output import (
    check_out,
    density,
    fresh_folder,
    log_warnings,
    run_record,
    working_folder,
    write_summary,
)
from gnnmd.lammps.md_settings import MDSettings
from gnnmd.lammps.ranks import world
from gnnmd.lammps.thermo import end_outputs_before, thermo_statistics


def run_lammps_md(data_file, forcefield, settings: MDSettings, out, threads: int = 1, overwrite: bool = False) -> dict:
    """The MD of `settings` with the force field `forcefield` (a ForceField, or a lammps_inputs/ file name;
    see gnnmd.lammps.label.reference_force_field) on `threads` threads (OPENMP styles). Writes the dump, log, thermo.txt and summary.json into `out` (md_output:
    complete, or not at all); the summary has run_md's statistics and speed, and like run_md's, the
    failure (`failed_at_step`, `failure`: LAMMPS' own error or a temperature jump).

    Under mpiexec LAMMPS divides the box over the ranks (MPI_COMM_WORLD); the first rank alone makes,
    fills and swaps in the folder (LAMMPS writes its files there too), and every rank returns its summary."""
    data_file, out = Path(data_file), Path(out)
    check_out(out, overwrite, data_file)
    comm = world() if lammps_world_size() > 1 else None
    root = comm is None or comm.rank == 0
    if comm is not None:
        comm.Barrier()  # every rank has checked `out` before the first makes its working folder
    work = working_folder(out)
    with fresh_folder(out, root):
        lmp = start_lammps(log=work / "log.lammps", threads=threads)
        set_up(lmp, load_system_commands(data_file, forcefield) + dynamics_commands(settings, work, False), data_file,
               out, settings)  # fmt: skip
        n_atoms = int(lmp.get_natoms())
        seconds, failure = timed_run(lmp, settings.steps)
        summary = None
        if root:
            summary = _finish(data_file, forcefield, settings, work, n_atoms, seconds, failure, threads,
                              1 if comm is None else comm.size)  # fmt: skip
    return summary if comm is None else comm.bcast(summary, root=0)


def _finish(data_file: Path, forcefield, settings: MDSettings, work: Path, n_atoms: int, seconds: float,
            failure, threads: int, ranks: int) -> dict:  # fmt: skip
    """On the first rank, after the run: cut the outputs at a failure, write summary.json (with the keys
    run_md's has that a force field can fill: ranks, warnings) and the warnings at the end of the log."""
    failed_at, failure = failure or (None, None)
    end_outputs_before(work, failed_at)
    statistics = thermo_statistics(work / "thermo.txt", n_atoms, failed_at, True, settings.ensemble,
                                   settings.temperature)  # fmt: skip
    summary = {
        "forcefield": getattr(forcefield, "source", forcefield),
        "system": str(data_file),
        **run_record(n_atoms, settings, failed_at, seconds),
        "threads": threads,
        "mpi_ranks": ranks,
        **statistics,
        "mean_density_g_cm3": _file_density(data_file, statistics["mean_volume"]),
        "failed_at_step": failed_at,
        "failure": failure,
        "warnings": [statistics["runaway"]["message"]] if statistics["runaway"] else [],
    }
    write_summary(work, summary)
    log_warnings(work / "log.lammps", summary["warnings"])
    return summary


def _file_density(data_file: Path, volume: float | None) -> float | None:
    """The density of a data file's system; None for one gnnmd cannot read without its Pair Coeffs (a CG
    system for pair_style table, whose coefficients come from the force field)."""
    try:
        return density(read_topology(data_file), volume)
    except DataError:
        return None
