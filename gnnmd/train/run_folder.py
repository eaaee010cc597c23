"""Where a training run writes, so that no user data is lost: one writer per run (an OS lock), a plain
run name, and `--overwrite` that replaces only a run gnnmd made, and only once the new run is complete.

A new run is written in place (`runs/NAME`), so a killed run can be resumed there. With `--overwrite`
of an existing run, the new run is written beside it (`runs/.NAME.new`) and swapped in when training
ends; until then the old run stays whole, and a kill leaves it as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gnnmd
from gnnmd.files import FolderLock, atomic_write_text, plain_name, swap_in

MARKER = "gnnmd-run.json"  # written first into every run folder: what says "gnnmd made this"


def is_gnnmd_run(folder: Path) -> bool:
    """A run folder gnnmd made: its marker, or (runs from before the marker) a config.json of gnnmd's."""
    if (folder / MARKER).is_file():
        return True
    try:
        return "gnnmd_version" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _check_replaceable(folder: Path) -> None:
    if not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder; gnnmd will not replace it")
    if any(folder.iterdir()) and not is_gnnmd_run(folder):
        raise FileExistsError(
            f"{folder}: not a gnnmd run (no {MARKER} or gnnmd config.json); --overwrite replaces only runs gnnmd made"
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
