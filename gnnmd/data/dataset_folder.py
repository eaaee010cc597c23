"""Writing a dataset folder safely, for every command that makes one (`gnnmd generate`, `gnnmd import`):
the work happens in a hidden sibling (`.NAME.partial`) that replaces the folder only when complete, under
an OS lock; an existing folder is replaced only with `overwrite`, only if gnnmd made it, and only if
it holds nothing but what gnnmd writes into a dataset (a user's notes or checkpoints are never wiped)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from gnnmd.files import FolderLock, swap_in

SOURCES = ("LAMMPS", "import", "coarse-grain", "coarse-grain-residual")  # a manifest's "source" when gnnmd wrote it
# what gnnmd writes into a dataset folder: generate and import (manifest, frames cache, segments), training
# (Coulomb and reference-virial caches), and the temp files of atomic_write a killed writer leaves
_OWN = r"manifest\.json|frames\.npz|(?:coulomb|virials)_[0-9a-f]{16}\.npz"
OWN_ENTRY = re.compile(rf"(?:{_OWN})(?:[a-z0-9_]{{8}}\.tmp)?")
SEGMENT_FOLDER = re.compile(r"segment_\d{3,}")
SEGMENT_ENTRIES = ("system.data", "frames.lammpstrj", "energy.txt", "log.lammps")


def is_gnnmd_dataset(folder: Path) -> bool:
    """A dataset gnnmd made (`generate` or `import`): its manifest.json says so."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "gnnmd_version" in manifest and manifest.get("source") in SOURCES


def foreign_entries(folder: Path) -> list[str]:
    """What in `folder` gnnmd did not write there (relative names, sorted): anything but OWN_ENTRY files and
    segment_NNN folders holding only SEGMENT_ENTRIES files. Links count as foreign."""
    foreign = []
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_symlink():
            foreign.append(entry.name)
        elif SEGMENT_FOLDER.fullmatch(entry.name) and entry.is_dir():
            inside = sorted(entry.iterdir())
            foreign += [f"{entry.name}/{e.name}" for e in inside
                        if e.name not in SEGMENT_ENTRIES or e.is_symlink() or not e.is_file()]  # fmt: skip
        elif not (OWN_ENTRY.fullmatch(entry.name) and entry.is_file()):
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def dataset_target(out, overwrite: bool, check_path: Callable[[Path], object] | None = None) -> Path:
    """`out` as an absolute path, once it is clear that it may be written: a new or empty folder, or
    (with `overwrite`) a dataset gnnmd made that holds nothing of the user's, and not the folder the user
    is in. `check_path` refuses paths a later consumer cannot take (LAMMPS: spaces)."""
    out = Path(os.path.abspath(out))
    if check_path is not None:
        check_path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if Path.cwd() == out or out in Path.cwd().parents:
        raise ValueError(f"{out}: is the current folder or contains it; give --out a folder of its own")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")
        if not is_gnnmd_dataset(out):
            raise FileExistsError(
                f"{out}: not a gnnmd dataset (no manifest.json of gnnmd generate or import); --overwrite replaces only those"
            )
        foreign = foreign_entries(out)
        if foreign:
            listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise FileExistsError(
                f"{out}: holds what gnnmd did not write ({listed}); move that out first, --overwrite replaces only gnnmd's own files"
            )
    return out


def write_dataset(out: Path, fill: Callable[[Path], dict]) -> dict:
    """Make the dataset `out` (from dataset_target) by `fill(work)`, which writes everything into the
    fresh folder `work` and returns the manifest; `out` is replaced only once that is complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(out):
        work = out.with_name(f".{out.name}.partial")
        if work.exists():
            shutil.rmtree(work)  # an interrupted run's, and we hold the lock
        work.mkdir()
        try:
            manifest = fill(work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        swap_in(work, out)
    return manifest
