"""Where a training run writes, so that no user data is lost: one writer per run (an OS lock), a plain
run name, and `--overwrite` that replaces only a run gnnmd made, and only once the new run is complete.

A new run is written in place (`runs/NAME`), so a killed run can be resumed there. With `--overwrite`
of an existing run, the new run is written beside it (`runs/.NAME.new`) and swapped in when training
ends; until then the old run stays whole, and a kill leaves it as it was."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import gnnmd
from gnnmd.files import FolderLock, atomic_write_text, plain_name, swap_in

MARKER = "gnnmd-run.json"  # written first into every run folder: what says "gnnmd made this"

# everything gnnmd writes into a run folder: the trainer's files, `gnnmd evaluate`'s default outputs
# beside best.pt, and the folders of checkpoints and TensorBoard events, with what goes in them
RUN_ENTRIES = (MARKER, "config.json", "metrics.csv", "best.pt", "summary.json", "summary.txt", "train.log",
               "eval-*.json", "eval-*.png", "committee-*.json", "committee-*.png")  # fmt: skip
RUN_FOLDERS = {"checkpoints": ("epoch_*.pt",), "tensorboard": ("events.out.tfevents.*",)}


def is_gnnmd_run(folder: Path) -> bool:
    """A run folder gnnmd made: its marker, or (runs from before the marker) a config.json of gnnmd's."""
    if (folder / MARKER).is_file():
        return True
    try:
        return "gnnmd_version" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _written_by_gnnmd(path: Path, patterns) -> bool:
    """A file named as gnnmd names its outputs, or the temp file of one that a kill left (atomic_write:
    the name, 8 random characters, .tmp)."""
    name = path.name[:-12] if path.name.endswith(".tmp") else path.name
    return path.is_file() and not path.is_symlink() and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _shown(path: Path) -> str:
    return path.name + ("/" if path.is_dir() else "")


def foreign_entries(folder: Path) -> list[str]:
    """What in a run folder a training run (or `gnnmd evaluate` beside its best.pt) did not write."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.name in RUN_FOLDERS and entry.is_dir() and not entry.is_symlink():
            inside = RUN_FOLDERS[entry.name]
            foreign += [
                f"{entry.name}/{_shown(e)}" for e in sorted(entry.iterdir()) if not _written_by_gnnmd(e, inside)
            ]
        elif not _written_by_gnnmd(entry, RUN_ENTRIES):
            foreign.append(_shown(entry))
    return foreign


def _check_replaceable(folder: Path) -> None:
    """--overwrite replaces a folder only if gnnmd made it and everything in it is gnnmd's."""
    if not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder; gnnmd will not replace it")
    if any(folder.iterdir()) and not is_gnnmd_run(folder):
        raise FileExistsError(
            f"{folder}: not a gnnmd run (no {MARKER} or gnnmd config.json); --overwrite replaces only runs gnnmd made"
        )
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise FileExistsError(
            f"{folder}: holds {shown}, which gnnmd did not write; --overwrite replaces only a run folder of "
            "gnnmd's own outputs (move those away first)"
        )


class RunFolder:
    """The folder a run writes into (`path`), the folder it ends up as (`final`) and the lock on it."""

    def __init__(self, runs_dir, name: str):
        self.final = Path(runs_dir) / plain_name(name, "run name (--name)")
        self.path = self.final
        self.lock = FolderLock(self.final)

    def plan(self, resume: bool, overwrite: bool) -> None:
        """Decide, before anything is written, where this run writes; raises if it may not."""
        if resume:
            if not (self.final / "checkpoints").is_dir():
                raise FileNotFoundError(f"{self.final}: nothing to resume (no checkpoints/)")
        elif self.final.exists():
            if not overwrite:
                raise FileExistsError(f"{self.final}: run directory exists; use --resume to continue it or --overwrite")
            _check_replaceable(self.final)
            self.path = self.final.with_name(f".{self.final.name}.new")

    def open(self) -> None:
        """Take the lock and create the folder (a leftover of an earlier interrupted overwrite goes)."""
        self.lock.acquire()
        if self.path != self.final and self.path.exists():
            shutil.rmtree(self.path)  # .NAME.new is gnnmd's own, and nobody else holds the lock
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        if not (self.path / MARKER).exists():
            atomic_write_text(self.path / MARKER, json.dumps({"kind": "run", "gnnmd_version": gnnmd.__version__}))

    def finish(self) -> None:
        """The run is complete: put it in its place (replacing the old run when overwriting)."""
        if self.path != self.final:
            swap_in(self.path, self.final)
            self.path = self.final

    def close(self) -> None:
        self.lock.release()
