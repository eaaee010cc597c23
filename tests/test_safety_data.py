"""Never lose a user's data, in the data layer: caches (frames.npz, coulomb_*.npz) that record what
they were made from and are rebuilt when it changes or when they break, and bad input that is reported
by file and fault instead of with a traceback."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from gnnmd.cli import main
from gnnmd.data import Frames, coulomb_cache, load_frames
from gnnmd.data.frames import FRAMES_FILE


@pytest.fixture
def reference(water_run):
    return load_frames(water_run)


@pytest.fixture
def dataset(water_run, reference, tmp_path):
    """A private copy of the water dataset (file times kept) whose frames.npz has been used once."""
    copy = tmp_path / "water"
    shutil.copytree(water_run, copy, ignore=shutil.ignore_patterns("coulomb_*.npz"))
    load_frames(copy)
    return copy


def _train(data, tmp_path, *extra):
    """`gnnmd train` on `data`, one epoch, no Coulomb: the exit code."""
    args = ["train", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1"]
    return main([*args, "--electrostatics", "none", "--no-progress", *extra])


def _frame_start(lines, k):
    return [n for n, line in enumerate(lines) if line.startswith("ITEM: TIMESTEP")][k]


def _same(frames, other):
    for name in ("positions", "forces", "cells", "energies", "timesteps", "segments"):
        np.testing.assert_array_equal(getattr(frames, name), getattr(other, name))


def _meta(path):
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["meta"][0]))


# ---------------------------------------------------------------- 5: frames.npz follows its sources


def test_nan_written_into_dump_after_cache_is_found(dataset, tmp_path, capsys):
    """A same-size edit (only the time changes) of a dump whose frames are cached is read, not hidden."""
    dump = dataset / "segment_000" / "frames.lammpstrj"
    lines = dump.read_text().splitlines(keepends=True)
    row = _frame_start(lines, 4) + 9 + 10
    words = lines[row].split(" ")
    words[-2] = "nan".rjust(len(words[-2]))
    lines[row] = " ".join(words)
    size = dump.stat().st_size
    dump.write_text("".join(lines))
    assert dump.stat().st_size == size
    cache = (dataset / FRAMES_FILE).read_bytes()
    assert _train(dataset, tmp_path) == 2
    err = capsys.readouterr().err
    assert "frames.lammpstrj, frame 4: forces contain NaN or inf" in err and "Traceback" not in err
    assert (dataset / FRAMES_FILE).read_bytes() == cache  # the old cache is left as it was


def test_truncation_warning_is_shown_every_time(dataset):
    dump = dataset / "segment_001" / "frames.lammpstrj"
    lines = dump.read_text().splitlines(keepends=True)
    start = _frame_start(lines, 5)
    dump.write_text("".join(lines[: start + 40]) + lines[start + 40][:12])
    for _ in range(3):  # read from the dump, then twice from the cache
        with pytest.warns(UserWarning, match=r"segment_001/frames\.lammpstrj: the last frame \(frame 5\) is truncated"):
            frames = load_frames(dataset)
        assert len(frames) == 11
    assert any("truncated" in note for note in _meta(dataset / FRAMES_FILE)["warnings"])


def test_manifest_edit_rebuilds_cache(dataset):
    manifest_file = dataset / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["segments"] = manifest["segments"][:1]
    manifest_file.write_text(json.dumps(manifest))
    frames = load_frames(dataset)
    assert len(frames) == 6 and set(frames.segments) == {0}


@pytest.mark.parametrize("bytes_kept", [0, 100, 20000])
def test_corrupt_frames_cache_is_named_and_rebuilt(dataset, reference, bytes_kept):
    cache = dataset / FRAMES_FILE
    cache.write_bytes(cache.read_bytes()[:bytes_kept])
    with pytest.warns(UserWarning, match=r"frames\.npz.*rebuil"):
        frames = load_frames(dataset)
    _same(frames, reference)
    _same(Frames.load(cache), reference)  # rewritten whole


def test_truncated_frames_file_is_named(dataset, tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes((dataset / FRAMES_FILE).read_bytes()[:20000])
    with pytest.raises(ValueError, match=r"broken\.npz: not a readable gnnmd frames file"):
        load_frames(broken)


def test_old_cache_without_record_is_rebuilt(dataset, reference):
    cache = dataset / FRAMES_FILE
    stale = Frames.load(cache)
    stale.forces = stale.forces * 2
    stale.save(cache)  # as an older gnnmd wrote it: no record of its sources
    _same(load_frames(dataset), reference)
    meta = _meta(cache)
    assert set(meta["sources"]) == {
        "manifest.json",
        *(f"segment_00{k}/{name}" for k in (0, 1) for name in ("system.data", "frames.lammpstrj", "energy.txt")),
    }
    dump = dataset / "segment_000" / "frames.lammpstrj"
    assert meta["sources"]["segment_000/frames.lammpstrj"] == [dump.stat().st_size, dump.stat().st_mtime_ns]


def test_cache_of_another_format_version_is_rebuilt(dataset, reference):
    cache = dataset / FRAMES_FILE
    meta = _meta(cache)
    meta["version"] = -1
    stale = Frames.load(cache)
    stale.forces = stale.forces * 2
    stale.save(cache, meta=meta)
    _same(load_frames(dataset), reference)
    assert _meta(cache)["version"] != -1


def test_cache_without_its_sources_is_used_with_a_warning(dataset, reference):
    (dataset / "segment_000" / "frames.lammpstrj").unlink()
    with pytest.warns(UserWarning, match=r"frames\.npz.*cannot be checked"):
        frames = load_frames(dataset)
    _same(frames, reference)


def test_unchanged_dataset_reads_its_cache(dataset, reference, monkeypatch):
    """Guard: an unchanged dataset is not read again and gives the same arrays."""
    import gnnmd.data.reader as reader

    stamp = (dataset / FRAMES_FILE).stat().st_mtime_ns
    monkeypatch.setattr(reader, "read_run", lambda *a, **k: pytest.fail("read the LAMMPS output again"))
    _same(load_frames(dataset), reference)
    assert (dataset / FRAMES_FILE).stat().st_mtime_ns == stamp


# ---------------------------------------------------------------- 5: the Coulomb cache


@pytest.fixture
def coulomb_inputs(reference):
    from gnnmd.models.electrostatics import Electrostatics

    frames = reference.subset(np.arange(2))
    return frames, Electrostatics.for_system(frames.topology, frames.mean_cell())


@pytest.mark.parametrize("bytes_kept", [0, 100, 1000])
def test_corrupt_coulomb_cache_is_named_and_recomputed(coulomb_inputs, tmp_path, bytes_kept):
    frames, electrostatics = coulomb_inputs
    first = coulomb_cache(frames, tmp_path, electrostatics, progress=False)
    first.path.write_bytes(first.path.read_bytes()[:bytes_kept])
    with pytest.warns(UserWarning, match=rf"{first.path.name}.*recomput"):
        again = coulomb_cache(frames, tmp_path, electrostatics, progress=False)
    assert again.path == first.path
    np.testing.assert_array_equal(again.forces, first.forces)
    np.testing.assert_array_equal(again.energies, first.energies)
    with np.load(first.path, allow_pickle=False) as data:  # rewritten whole
        np.testing.assert_array_equal(data["forces"], first.forces)
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temp file left


def test_caches_get_the_users_permissions(dataset, coulomb_inputs, tmp_path):
    """Guard: caches are written with the user's umask, like any other file (not owner-only)."""
    previous = os.umask(0o002)
    try:
        (dataset / FRAMES_FILE).unlink()
        load_frames(dataset)
        frames, electrostatics = coulomb_inputs
        cache = coulomb_cache(frames, tmp_path / "pme", electrostatics, progress=False)
    finally:
        os.umask(previous)
    assert (dataset / FRAMES_FILE).stat().st_mode & 0o777 == 0o664
    assert cache.path.stat().st_mode & 0o777 == 0o664


# ---------------------------------------------------------------- 6: errors that name the file


@pytest.mark.parametrize("name", ["segment_000/frames.lammpstrj", "segment_001/system.data", "segment_001/energy.txt"])
def test_empty_source_file_is_named(dataset, tmp_path, capsys, name):
    (dataset / name).write_bytes(b"")
    cache = (dataset / FRAMES_FILE).read_bytes()
    assert _train(dataset, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"{dataset / name}: the file is empty" in err and "Traceback" not in err
    assert (dataset / FRAMES_FILE).read_bytes() == cache
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "text, fault",
    [
        ("{oops", "not JSON"),
        ("[1, 2]", 'no "segments" list'),
        ('{"segments": "segment_000"}', 'no "segments" list'),
        ('{"segments": []}', 'the "segments" list is empty'),
        ('{"segments": [7]}', "segment 0 has no data_file"),
        ('{"segments": [{"data_file": "segment_000/system.data", "energy_file": "x"}]}', "segment 0 has no dump_file"),
    ],
)
def test_bad_manifest_is_named(dataset, tmp_path, capsys, text, fault):
    (dataset / FRAMES_FILE).unlink()
    (dataset / "manifest.json").write_text(text)
    assert _train(dataset, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"{dataset / 'manifest.json'}: " in err and fault in err and "Traceback" not in err
    assert (dataset / "segment_000" / "frames.lammpstrj").is_file()
    assert not (tmp_path / "runs").exists()


def test_negative_hidden_names_the_option(water_run, tmp_path, capsys):
    assert _train(water_run, tmp_path, "--model", "eqforce", "--hyper", "hidden=-5") == 2
    err = capsys.readouterr().err
    assert "--hyper" in err and "eqforce" in err and "hidden=-5" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # no run folder left behind
    assert (water_run / FRAMES_FILE).is_file()
