"""A dataset folder's frames.npz: the frames read back from its LAMMPS output once, kept with a record of
what they were read from (size and mtime of manifest.json and of every segment's data file, dump and
energy file, and the cache format), and rebuilt whenever that record no longer matches, or the cache is
damaged. Warnings that reading gave (a truncated last frame) are kept in it and shown on every use."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from gnnmd.data.frames import FRAMES_FILE, DataWarning, Frames
from gnnmd.data.reader import SEGMENT_FILES, DataError, read_manifest, read_run

# the version of frames.npz as load_frames writes it; one that records another is rebuilt from its
# sources (1: no record at all)
FRAMES_CACHE_VERSION = 2


def _source_names(directory: Path) -> list[str]:
    """manifest.json and every file its segments name, relative to the dataset folder, each once."""
    manifest = read_manifest(directory)
    names = ["manifest.json"] + [
        segment[key] for segment in manifest["segments"] for key in SEGMENT_FILES if segment.get(key) is not None
    ]
    return list(dict.fromkeys(names))


def frames_record(directory: str | Path, notes: list[str] | tuple = ()) -> dict:
    """What a dataset's frames.npz is made from, to store with it (`Frames.save(path, meta=...)`): the cache
    format version, [size, mtime_ns] of manifest.json and of each segment's data file, dump and energy file,
    and `notes`, the warnings reading them gave (shown again whenever the cache is used). Take it before
    reading, so that a source changed while it is read makes the next load read it again."""
    directory = Path(directory)
    sources = {}
    for name in _source_names(directory):
        try:
            stat = (directory / name).stat()
        except FileNotFoundError as err:
            raise DataError(f"{directory / name}: not found (listed in {directory / 'manifest.json'})") from err
        sources[name] = [stat.st_size, stat.st_mtime_ns]
    return {"version": FRAMES_CACHE_VERSION, "sources": sources, "warnings": [str(note) for note in notes]}


def _warn_always(message: str) -> None:
    """A DataWarning at the caller of gnnmd.data, every time (warnings.warn shows one only once per place)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("gnnmd.data"):
        frame = frame.f_back
    module = frame.f_globals.get("__name__", "<unknown>")
    warnings.warn_explicit(
        message, DataWarning, frame.f_code.co_filename, frame.f_lineno, module, None, frame.f_globals
    )


def _notes_of(meta) -> list[str]:
    notes = meta.get("warnings") if isinstance(meta, dict) else None
    return [str(note) for note in notes] if isinstance(notes, list) else []


def _missing_source(directory: Path) -> str | None:
    """Why a dataset's frames cannot be checked against their sources (manifest.json or a file it names is
    gone), or None if they all exist. A manifest that is there but wrong is an error (DataError)."""
    if not (directory / "manifest.json").is_file():
        return f"{directory / 'manifest.json'} is gone"
    for name in _source_names(directory):
        if not (directory / name).is_file():
            return f"{directory / name} is gone"
    return None


def _cached_frames(directory: Path, cached: Path) -> Frames | None:
    """The frames in `cached` if they are what the dataset's sources give now, else None (rebuild them).

    A broken cache is named in a warning; one whose sources are gone is used with a warning that it cannot
    be checked; the warnings reading the sources gave are shown again."""
    try:
        frames, meta = Frames.load_with_meta(cached)
    except ValueError as err:
        _warn_always(f"{err}; rebuilding it from the LAMMPS output")
        return None
    missing = _missing_source(directory)
    if missing is not None:
        _warn_always(f"{cached}: cannot be checked against the LAMMPS output it was read from ({missing}); using it")
    elif not isinstance(meta, dict) or meta.get("version") != FRAMES_CACHE_VERSION:
        return None  # written by another gnnmd: read the sources again
    elif meta.get("sources") != frames_record(directory)["sources"]:
        return None  # a source changed since
    for note in _notes_of(meta):
        _warn_always(note)
    return frames


def _read_recorded(directory: Path) -> tuple[Frames, dict]:
    """read_run, and the record to store with its frames, with the warnings that reading gave."""
    record = frames_record(directory)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = read_run(directory)
    for caught_warning in caught:
        if issubclass(caught_warning.category, (UserWarning, RuntimeWarning)):  # about the data, not the code
            record["warnings"].append(str(caught_warning.message))
        else:
            warnings.warn_explicit(
                caught_warning.message, caught_warning.category, caught_warning.filename, caught_warning.lineno
            )
    for note in record["warnings"]:
        _warn_always(note)
    return frames, record


def _load_dataset(directory: Path) -> Frames:
    """A dataset folder's frames: its frames.npz while that matches the LAMMPS output, else read again
    from it and stored (with a record of what it was read from) for next time."""
    cached = directory / FRAMES_FILE
    if cached.is_file():
        frames = _cached_frames(directory, cached)
        if frames is not None:
            return frames
    frames, record = _read_recorded(directory)
    try:
        frames.save(cached, meta=record)
    except OSError as err:  # e.g. a read-only dataset: still usable, only slower
        _warn_always(f"{cached}: cannot be written ({err}); the LAMMPS output is read again each time")
    return frames


def load_frames(path: str | Path) -> Frames:
    """Frames of a generated dataset directory (its frames.npz, made from the LAMMPS output when missing,
    broken, or older than that output) or of a frames .npz file."""
    path = Path(path)
    if path.is_dir():
        return _load_dataset(path)
    if path.suffix == ".npz":
        return Frames.load(path)
    raise FileNotFoundError(f"{path}: neither a gnnmd dataset directory nor a frames .npz file")
