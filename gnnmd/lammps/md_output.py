"""An MD run's output folder and what it promises: a run is written into a fresh hidden folder beside
`out` and put in its place only when complete (files.swap_in), so an overwriting run leaves nothing of
the one before (a committee's deviation.txt included) and a crash leaves the old one whole; --overwrite
replaces only a folder gnnmd md wrote (its summary.json's "kind", or, from before the kind, its files);
and the summary's shared records (size, ensemble, speed, density)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np

from gnnmd.files import FolderLock, atomic_write_text, swap_in
from gnnmd.lammps.engine import check_lammps_path
from gnnmd.lammps.md_settings import MDSettings

KIND = "gnnmd-md"  # summary.json's "kind": the folder is an MD run's (gnnmd md's or run_lammps_md's)
# prior/: the tables of the CG prior under a model (gnnmd.lammps.cg_prior)
MD_FILES = ("trajectory.lammpstrj", "log.lammps", "thermo.txt", "summary.json", "deviation.txt", "prior")
# what an MD summary.json from before its "kind" has, and a training run's summary has not
_OLD_MD_KEYS = {"timestep_fs", "steps_per_second", "blown_up", "failed_at_step"}


def check_out(out: Path, overwrite: bool, data_file: Path) -> None:
    """Refuse, before LAMMPS starts, paths LAMMPS cannot take, an `out` with files (unless `overwrite`),
    and, even with `overwrite`, one that is not an MD run's output folder (md_output_problem)."""
    check_lammps_path(data_file)
    check_lammps_path(out)
    if out.name in ("", ".", "..") or (out.exists() and out.resolve() == Path.cwd().resolve()):
        raise ValueError(f"--out {out} is the folder you are in (or above it); name a folder for the run")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder; --out needs a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace its files")
        problem = md_output_problem(out)
        if problem:
            raise FileExistsError(f"{out}: {problem}; --overwrite replaces only a folder gnnmd md wrote")


def md_output_problem(folder: Path) -> str | None:
    """Why `folder` is not an MD run's output (None: it is): an entry gnnmd md does not write, or a
    summary.json that is not an MD run's."""
    others = sorted(p.name for p in folder.iterdir() if p.name not in MD_FILES)
    if others:
        return f"it has entries gnnmd md does not write ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
    summary = folder / "summary.json"
    if not summary.exists():
        return None  # a run stopped before its summary (setup failed, or killed): recognised by its files
    try:
        record = json.loads(summary.read_text())
    except (OSError, ValueError):
        return "its summary.json is not readable JSON"
    if not isinstance(record, dict) or (record.get("kind") != KIND and not _OLD_MD_KEYS <= set(record)):
        return "its summary.json is not an MD run's (another command's output?)"
    return None


def working_folder(out: Path) -> Path:
    """Where a run into `out` writes until it is complete (fresh_folder)."""
    return out.with_name(f".{out.name}.new")


@contextlib.contextmanager
def fresh_folder(out: Path, root: bool = True):
    """Write a run into working_folder(out), put in `out`'s place (swap_in) once the block ends. If the
    block raises, an old run in `out` stays as it was and the partial one is removed; with no old run
    the partial one takes `out` (its log says what went wrong, as LAMMPS left it). Only the first rank
    (`root`) makes, locks and swaps it."""
    new = working_folder(out)
    if not root:
        yield new
        return
    with FolderLock(out):  # one writer per output folder
        if new.exists():  # a killed run's: gnnmd's own, under the lock
            shutil.rmtree(new)
        new.mkdir(parents=True)
        try:
            yield new
        except BaseException:
            if out.exists() and any(out.iterdir()):
                shutil.rmtree(new, ignore_errors=True)
            else:
                swap_in(new, out)
            raise
        swap_in(new, out)


def write_summary(folder: Path, summary: dict) -> None:
    atomic_write_text(folder / "summary.json", json.dumps({"kind": KIND, **summary}, indent=2) + "\n")


def run_record(n_atoms: int, run: MDSettings, failed_at: int | None, seconds: float) -> dict:
    """The summary's description of a run (run_md's and run_lammps_md's): size, ensemble and speed, over
    the steps before a failure (those after it cost nothing)."""
    steps = run.steps if failed_at is None else max(failed_at, 1)
    return {
        "atoms": n_atoms,
        "ensemble": run.ensemble,
        "temperature": run.temperature,
        "timestep_fs": run.timestep,
        "steps": run.steps,
        "seconds": round(seconds, 3),
        "steps_per_second": steps / seconds,
        "atom_steps_per_second": steps * n_atoms / seconds,
    }


def density(topology, volume: float | None) -> float | None:
    """g/cm^3 of the system's atoms in `volume` A^3."""
    if volume is None:
        return None
    return float(np.asarray(topology.table_masses)[topology.types].sum() / volume * 1.66053907)


def log_warnings(log: Path, messages: list[str]) -> None:
    """The run's warnings at the end of its log.lammps (LAMMPS has closed it)."""
    if messages and log.is_file():
        with open(log, "a") as file:
            file.writelines(f"WARNING (gnnmd): {message}\n" for message in messages)
