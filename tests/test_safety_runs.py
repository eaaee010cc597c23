"""Never lose a user's data, for runs and datasets: every option is checked before anything is touched,
`--overwrite` replaces only what gnnmd made and only once the new one is complete, one writer per folder
(an OS lock that dies with its process), `--resume` that refuses changed settings, evaluation splits that
exist only on the run's own data, and Ctrl-C that leaves things whole. Each case checks the exit code,
a message naming the file or option, no traceback, and checksums of what existed before."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gnnmd.cli import main
from gnnmd.files import FolderLock
from gnnmd.train import TrainConfig, train

TINY = ["--model", "mpnn", "--hyper", "hidden=8", "--hyper", "layers=1", "--epochs", "1", "--batch-size", "4"]


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(args, capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def runs(water_run, tmp_path, capsys):
    """runs/precious: a finished tiny run, and runs/other beside it."""
    runs = tmp_path / "runs"
    for name in ("precious", "other"):
        args = ["train", "--data", str(water_run), "--runs-dir", str(runs), "--name", name, *TINY, "--no-progress"]
        assert main(args) == 0
    capsys.readouterr()
    return runs


def train_args(water_run, runs, name, *extra):
    return ["train", "--data", str(water_run), "--runs-dir", str(runs), "--name", name, *TINY, "--no-progress", *extra]


# ---------------------------------------------------------------- 1. --overwrite deletes before it checks


def test_overwrite_with_a_bad_option_leaves_the_run_whole(water_run, runs, capsys):
    before = checksums(runs)
    code, err = run_cli(train_args(water_run, runs, "precious", "--overwrite", "--cutoff", "0"), capsys)
    assert code == 2 and "--cutoff" in err
    assert checksums(runs) == before


@pytest.mark.parametrize("name", [".", "..", "../some_dataset", "a/b", ""])
def test_a_run_name_must_be_plain(water_run, runs, name, capsys):
    dataset = runs.parent / "some_dataset"
    dataset.mkdir()
    (dataset / "notes.txt").write_text("mine")
    before, data_before = checksums(runs), checksums(dataset)
    code, err = run_cli(train_args(water_run, runs, name, "--overwrite"), capsys)
    assert code == 2 and "--name" in err
    assert checksums(runs) == before and checksums(dataset) == data_before


def test_overwrite_refuses_a_folder_gnnmd_did_not_make(water_run, runs, capsys):
    mine = runs / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a run")
    code, err = run_cli(train_args(water_run, runs, "mine", "--overwrite"), capsys)
    assert code == 2 and str(mine) in err and "not a gnnmd run" in err
    assert (mine / "notes.txt").read_text() == "not a run"


def test_overwrite_replaces_the_run_only_once_the_new_one_is_complete(water_run, runs):
    old = checksums(runs / "precious")
    config = TrainConfig(
        data=str(water_run), runs_dir=str(runs), name="precious", model="mpnn", hyper={"hidden": 8, "layers": 1},
        epochs=2, batch_size=4, overwrite=True, progress=False, checkpoint_every=1,
    )  # fmt: skip
    assert train(config, stop_after=1) == {"stopped_after": 1}  # killed after an epoch
    assert checksums(runs / "precious") == old  # the old run is whole; the new one was beside it
    assert (runs / ".precious.new" / "checkpoints" / "epoch_0001.pt").is_file()
    summary = train(config)
    assert summary["run_dir"] == str(runs / "precious") and summary["epochs_run"] == 2
    assert json.loads((runs / "precious" / "config.json").read_text())["epochs"] == 2
    assert not (runs / ".precious.new").exists()
    assert sorted(p.name for p in runs.iterdir() if not p.name.endswith(".lock")) == ["other", "precious"]


def test_generate_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    code, err = run_cli(["generate", "argon", "--out", str(folder), "--overwrite", "--frames", "2"], capsys)
    assert code == 2 and str(folder) in err and "not a gnnmd dataset" in err
    assert (folder / "notes.txt").read_text() == "my notes" and sorted(os.listdir(folder)) == ["notes.txt"]


@pytest.mark.parametrize("where", ["file", "here"])
def test_generate_out_that_is_a_file_or_the_current_folder(tmp_path, monkeypatch, where, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("keep")
    out = "a_file" if where == "file" else "."
    code, err = run_cli(["generate", "argon", "--out", out, "--overwrite", "--frames", "2"], capsys)
    assert code == 2 and str(tmp_path) in err
    assert (tmp_path / "a_file").read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["a_file"]


# ---------------------------------------------------------------- 2. two writers, one folder


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding gnnmd's lock on `folder`, as a running gnnmd would."""
    code = (
        "import sys, time; from gnnmd.files import FolderLock; FolderLock(sys.argv[1]).acquire(); "
        "print('locked', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_of_a_run_is_refused_until_the_first_is_gone(water_run, runs, capsys):
    before = checksums(runs / "precious")
    holder = hold_lock(runs / "precious")
    try:
        for extra in (["--overwrite"], ["--resume", "--epochs", "2"]):
            code, err = run_cli(train_args(water_run, runs, "precious", *extra), capsys)
            assert code == 2 and "another gnnmd process" in err and f"pid {holder.pid}" in err
        assert checksums(runs / "precious") == before
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its process
    assert run_cli(train_args(water_run, runs, "precious", "--overwrite"), capsys)[0] == 0


def test_a_second_generate_into_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "argon"
    holder = hold_lock(out)
    try:
        code, err = run_cli(["generate", "argon", "--out", str(out), "--frames", "2"], capsys)
        assert code == 2 and "another gnnmd process" in err and str(out) in err
        assert not out.exists() and not (tmp_path / ".argon.partial").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_free_again_after_a_run():
    lock = FolderLock("/tmp/gnnmd-lock-test-folder")
    with lock:
        pass
    with FolderLock("/tmp/gnnmd-lock-test-folder"):
        pass


# ---------------------------------------------------------------- 6. unclear errors


def test_resume_refuses_changed_settings_and_lists_them(water_run, runs, capsys):
    config_before = (runs / "precious" / "config.json").read_text()
    extra = ["--resume", "--epochs", "2", "--lr-decay", "0.5", "--warmup", "3"]
    code, err = run_cli(train_args(water_run, runs, "precious", *extra), capsys)
    assert code == 2 and "lr_decay 0.95 -> 0.5" in err and "warmup_epochs 5 -> 3" in err
    assert "epoch_0001.pt" in err  # names the checkpoint it would continue
    assert (runs / "precious" / "config.json").read_text() == config_before
    # more epochs alone is what --resume is for
    assert run_cli(train_args(water_run, runs, "precious", "--resume", "--epochs", "2"), capsys)[0] == 0
    assert json.loads((runs / "precious" / "summary.json").read_text())["epochs_run"] == 2


def test_evaluate_refuses_a_split_of_data_the_model_never_split(water_run, argon_run, runs, tmp_path, capsys):
    model = runs / "precious" / "best.pt"
    out = tmp_path / "eval.json"
    code, err = run_cli(["evaluate", "--model", str(model), "--data", str(argon_run), "--split", "val",
                         "--out", str(out), "--no-progress"], capsys)  # fmt: skip
    assert code == 2 and str(model) in err and "--split all" in err and not out.exists()
    args = ["evaluate", "--model", str(model), "--data", str(water_run), "--split", "val", "--out", str(out)]
    assert run_cli([*args, "--no-progress"], capsys)[0] == 0  # its own data: fine


@pytest.mark.slow
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_generate_leaves_one_line_and_the_old_dataset(argon_run, tmp_path):
    out = tmp_path / "argon"
    subprocess.run(["cp", "-a", str(argon_run), str(out)], check=True)
    before = checksums(out)
    command = [sys.executable, "-m", "gnnmd.cli", "generate", "argon", "--out", str(out), "--overwrite",
               "--atoms", "64", "--frames", "5", "--equil-steps", "5000000", "--no-progress"]  # fmt: skip
    # 5M steps: many seconds even on a fast, idle machine (200k steps of 64 atoms could end within the
    # second this test waits before it interrupts)
    # as from a shell: Ctrl-C at its default (a test process may have inherited it ignored, and a child
    # would inherit that and run on)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    partial = tmp_path / ".argon.partial"
    deadline = time.time() + 60
    while not (partial / "segment_000" / "log.lammps").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # LAMMPS is running
    process.send_signal(signal.SIGINT)
    try:
        err = process.communicate(timeout=60)[1]
    finally:
        process.kill()  # whatever happened, no LAMMPS left running
    assert process.returncode == 130, err
    assert err.strip() == "gnnmd generate: interrupted"
    assert not partial.exists() and checksums(out) == before


def test_a_checkpoint_with_a_bad_cutoff_is_named(water_run, runs, tmp_path, capsys):
    import torch

    payload = torch.load(runs / "precious" / "best.pt", weights_only=True)
    payload["cutoff"] = payload["hyper"]["cutoff"] = -1.0
    bad = tmp_path / "bad_cutoff.pt"
    torch.save(payload, bad)
    code, err = run_cli(["evaluate", "--model", str(bad), "--data", str(water_run), "--no-progress"], capsys)
    assert code == 2 and str(bad) in err and "cutoff" in err


def test_md_out_that_is_a_file(argon_run, argon_model, tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("keep")
    args = ["md", "--model", str(argon_model), "--system", str(argon_run / "segment_000" / "system.data")]
    code, err = run_cli([*args, "--steps", "2", "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and str(out) in err and out.read_text() == "keep"
