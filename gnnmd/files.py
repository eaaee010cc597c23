"""Writing files so that a kill never leaves half of one: write a temp file beside the target, then
rename it over the target. Used for checkpoints, frames, caches, metrics and reports."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable, mode: str = "wb") -> Path:
    """Call `write(handle)` on a temp file next to `path`, then rename it to `path`. The file gets the
    user's normal permissions (mkstemp alone would make it owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text), mode="w")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class BusyError(RuntimeError):
    """Another gnnmd process is writing the same folder."""


class FolderLock:
    """An OS lock (flock) on a folder gnnmd is writing, held on a hidden file beside it (`.NAME.lock`, removed
    when the writer is done): a second writer gets a BusyError, and the lock goes away with the process
    however it ends."""

    def __init__(self, folder):
        self.folder = Path(folder).absolute()
        self.path = self.folder.parent / f".{self.folder.name}.lock"
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise BusyError(
                    f"{self.folder}: another gnnmd process (pid {owner}) is writing it; wait for it to finish"
                ) from None
            if self._still_at_path(fd):  # not a file a finishing holder has just removed
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file, then let go of it (closing drops the flock); a process killed holding it
        leaves the file, unlocked, for the next writer to take."""
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def plain_name(name: str, what: str = "name") -> str:
    """`name` if it names one entry of a folder: no path separator, not '.', '..' or empty."""
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise ValueError(f"{what} must be a plain name (no '/', not '.' or '..'), got {name!r}")
    return name


def swap_in(new, target) -> None:
    """Replace `target` by the complete folder `new` (same parent): the old one is moved aside first and
    deleted only once `new` is in its place, so a crash leaves one of the two whole."""
    new, target = Path(new), Path(target)
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(aside)
    new.rename(target)
    if aside.exists():
        import shutil

        shutil.rmtree(aside)
