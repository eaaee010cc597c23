"""The trainer on real LAMMPS frames: it learns (no collapse to zero), resumes exactly, fine-tunes
with frozen parts untouched, and trains data-parallel with identical weights on every rank."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import load_frames, split_indices
from gnnmd.inference.evaluate import evaluate_model
from gnnmd.models.checkpoint import load_model, read_checkpoint, read_info
from gnnmd.train import TrainConfig as PackageTrainConfig
from gnnmd.train.trainer import TrainConfig, train


def _config(data, runs, **kw):
    base = dict(
        data=str(data),
        runs_dir=str(runs),
        model="eqforce",
        hyper={"hidden": 16},
        epochs=4,
        batch_size=2,
        lr=3e-3,
        warmup_epochs=1,
        progress=False,
        checkpoint_every=2,
        patience=100,
        electrostatics="none",
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_force_only_training_cuts_the_loss_5x_below_predicting_zero(water_run, tmp_path):
    torch.set_num_threads(1)
    config = _config(water_run, tmp_path, name="fit", hyper={"hidden": 32}, epochs=30, batch_size=1, lr_decay=0.97)
    summary = train(config)
    assert summary["epochs_run"] == 30
    frames = load_frames(water_run)
    train_idx, _ = split_indices(frames)
    model, info = load_model(tmp_path / "fit" / "checkpoints" / "epoch_0030.pt")
    result = evaluate_model(model, frames, info.cutoff, train_idx, progress=False)
    # predicting zero (seed 000's collapse) has MAE = mean |F|; 300 steps must get 5x below that
    assert result["force_mae"] < 0.2 * result["mean_abs_force"], result["force_mae"]
    rows = list(csv.DictReader(open(tmp_path / "fit" / "metrics.csv")))
    assert len(rows) == 30 and float(rows[-1]["train_loss"]) < 0.3 * float(rows[0]["train_loss"])
    for column in ("val_force_mae", "val_force_rmse_z", "val_force_mae_O", "train_force_rmse_H", "lr", "wall_seconds"):
        assert column in rows[0]
    assert (tmp_path / "fit" / "best.pt").is_file() and (tmp_path / "fit" / "summary.txt").read_text().strip()
    config_json = json.loads((tmp_path / "fit" / "config.json").read_text())
    assert (
        config_json["normalisation"]["force_scale"] > 5
        and config_json["train_frames"] + config_json["val_frames"] == 12
    )


def test_config_json_loads_back_to_the_resolved_config(water_run, tmp_path):
    torch.set_num_threads(1)
    config = _config(water_run, tmp_path, name="json", epochs=1, hyper={"hidden": 8}, electrostatics="auto")
    train(config)
    assert config.electrostatics == "auto" and config.hyper == {"hidden": 8}  # the caller's config is untouched
    with pytest.raises(FrozenInstanceError):
        config.epochs = 2
    loaded = TrainConfig.from_json(tmp_path / "json" / "config.json")
    hyper = read_checkpoint(tmp_path / "json" / "best.pt")["hyper"]  # the model's: defaults and cutoff filled in
    assert hyper["hidden"] == 8 and hyper["cutoff"] == config.cutoff
    resolved = replace(config, data=str(Path(water_run).resolve()), electrostatics="pme", hyper=hyper)
    assert PackageTrainConfig is TrainConfig and loaded == resolved


@pytest.mark.slow
def test_resume_after_a_kill_equals_an_uninterrupted_run(water_run, tmp_path):
    torch.set_num_threads(1)
    # mpnn: dropout and rotation augmentation make every epoch depend on the random state
    kw = dict(model="mpnn", hyper={"hidden": 16}, epochs=5, checkpoint_every=2)
    train(_config(water_run, tmp_path, name="whole", **kw))
    # the "killed" run did 3 epochs: metrics and best.pt reach epoch 3, the last checkpoint is epoch 2
    train(_config(water_run, tmp_path, name="killed", **kw), stop_after=3)
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["epoch_0002.pt"]
    with pytest.raises(FileExistsError):
        train(_config(water_run, tmp_path, name="killed", **kw))
    train(_config(water_run, tmp_path, name="killed", resume=True, **kw))

    whole = read_checkpoint(tmp_path / "whole" / "checkpoints" / "epoch_0005.pt")
    resumed = read_checkpoint(tmp_path / "killed" / "checkpoints" / "epoch_0005.pt")
    for key, tensor in whole["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][key]), key

    def losses(name):
        rows = csv.DictReader(open(tmp_path / name / "metrics.csv"))
        return [(r["epoch"], r["train_loss"], r["val_loss"], r["val_force_mae"], r["lr"]) for r in rows]

    assert losses("whole") == losses("killed") and len(losses("whole")) == 5
    with pytest.raises(ValueError, match="seed"):
        train(_config(water_run, tmp_path, name="killed", resume=True, seed=1, **kw))


def test_finetune_keeps_frozen_parts_bit_identical(water_run, argon_run, tmp_path, capsys):
    torch.set_num_threads(1)
    # argon neighbours sit at ~3.8 A, so the water parent needs the study's argon cutoff (4.4 A)
    parent_summary = train(_config(water_run, tmp_path, name="water", epochs=2, cutoff=4.4))
    parent = tmp_path / "water" / "best.pt"
    code = main(
        [
            "finetune",
            "--from",
            str(parent),
            "--data",
            str(argon_run),
            "--runs-dir",
            str(tmp_path),
            "--name",
            "argon",
            "--freeze",
            "encoders,mp1",
            "--epochs",
            "3",
            "--lr",
            "1e-3",
            "--batch-size",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0 and "val force MAE" in capsys.readouterr().out
    before, _ = load_model(parent)
    after, info = load_model(tmp_path / "argon" / "best.pt")
    frozen = {n for group in ("encoders", "mp1") for n, _ in before.parameters_of(group)}
    assert any(n.startswith("node_encoder") for n in frozen) and any(n.startswith("layers.0.") for n in frozen)
    new = dict(after.named_parameters())
    changed = [n for n, p in before.named_parameters() if not torch.equal(p, new[n])]
    assert changed and not frozen & set(changed)
    assert all(n.startswith(("layers.1", "layers.2", "edge_head")) for n in changed)
    # types from the new data, parent recorded, normalisation from the new data
    assert [row["name"] for row in info.type_table] == ["Ar"]
    assert info.parent["path"] == str(parent.resolve()) and len(info.parent["sha256"]) == 64
    assert info.parent["type_table"][0]["name"] == "O"
    assert info.normalisation["force_scale"] < 0.2 * info.parent["normalisation"]["force_scale"]
    assert parent_summary["model"] == info.family == "eqforce"
    loaded = TrainConfig.from_json(tmp_path / "argon" / "config.json")
    assert loaded.freeze == ("encoders", "mp1") and loaded.model == "eqforce" and loaded.init_from == str(parent)
    assert (
        main(
            [
                "finetune",
                "--from",
                str(parent),
                "--data",
                str(argon_run),
                "--runs-dir",
                str(tmp_path),
                "--name",
                "bad",
                "--freeze",
                "nonsense",
                "--no-progress",
            ]
        )
        == 2
    )


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(water_run, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "gnnmd.cli",
        "train",
        "--model",
        "mpnn",
        "--hyper",
        "hidden=16",
        "--data",
        str(water_run),
        "--runs-dir",
        str(tmp_path),
        "--name",
        "ddp",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--no-progress",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 1
    digests = summary["rank_param_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2
    assert (tmp_path / "ddp" / "checkpoints" / "epoch_0001.pt").is_file()


def test_pme_training_learns_the_remainder_and_evaluation_adds_coulomb_back(water_run, tmp_path):
    """With PME the network is trained on reference minus Coulomb; the checkpoint carries the PME settings,
    so evaluation (model + Coulomb against the reference) reproduces the trainer's validation error."""
    from gnnmd.inference.evaluate import evaluate_checkpoint

    torch.set_num_threads(1)
    summary = train(_config(water_run, tmp_path, name="pme", electrostatics="auto", epochs=2))
    info = read_info(tmp_path / "pme" / "best.pt")
    assert info.config["electrostatics"] == "pme" and info.pme.real_space_cutoff > 0
    # the PME baseline is the dataset's reference force field's, which the checkpoint carries
    assert info.force_field == json.loads((water_run / "manifest.json").read_text())["force_field"]
    assert info.pme.special == (0.0, 0.0, 1.0) and info.pme.angle  # SPC/Fw: coul 0 0 1, angle yes
    assert list(water_run.glob("coulomb_*.npz"))  # computed once, next to the frames
    result, _ = evaluate_checkpoint(tmp_path / "pme" / "best.pt", water_run, split="val", progress=False)
    assert result["force_mae"] == pytest.approx(summary["best_val_force_mae"], rel=1e-4)
    bare, bare_info = load_model(tmp_path / "pme" / "best.pt")  # the network alone: Coulomb missing
    frames = load_frames(water_run)
    _, val_idx = split_indices(frames)
    bare_mae = evaluate_model(bare, frames, bare_info.cutoff, val_idx, progress=False)["force_mae"]
    assert abs(bare_mae - result["force_mae"]) > 1.0


def test_logs_a_person_can_read(water_run, tmp_path, capsys):
    """Output to a file (not a terminal): the per-epoch lines and no progress bars; --quiet: neither, while
    the run's train.log keeps every epoch."""
    from gnnmd.cli import main

    args = ["train", "--data", str(water_run), "--model", "eqforce", "--hyper", "hidden=8", "--cutoff", "3.0"]
    args += ["--epochs", "2", "--electrostatics", "none", "--runs-dir", str(tmp_path), "--threads", "1"]
    assert main([*args, "--name", "loud"]) == 0
    out = capsys.readouterr()
    assert "epoch 1: train loss" in out.out and "epoch 2: train loss" in out.out
    assert "\r" not in out.out + out.err and "frame/s" not in out.err  # no tqdm bars in a log
    assert main([*args, "--name", "quiet", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "epoch" not in out.out and out.err == ""
    log = (tmp_path / "quiet" / "train.log").read_text().splitlines()
    assert len(log) == 2 and "epoch 2: train loss" in log[1]


def test_config_file_with_flags_overriding_it(water_run, tmp_path):
    """`gnnmd train --config FILE.yaml`: the file's options, the command line's flags over them; a run's own
    config.json works as a config file too; an unknown option is refused naming the file."""
    from gnnmd.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {water_run}\nmodel: eqforce\nhyper:\n  hidden: 8\ncutoff: 3.0\nepochs: 2\nelectrostatics: none\n"
        f"runs_dir: {tmp_path / 'runs'}\nname: from-yaml\nseed: 3\n"
    )
    assert main(["train", "--config", str(config), "--epochs", "1", "--threads", "1", "--quiet"]) == 0
    resolved = json.loads((tmp_path / "runs" / "from-yaml" / "config.json").read_text())
    assert resolved["epochs"] == 1 and resolved["seed"] == 3 and resolved["hyper"]["hidden"] == 8
    assert resolved["cutoff"] == 3.0 and resolved["model"] == "eqforce"
    again = ["train", "--config", str(tmp_path / "runs" / "from-yaml" / "config.json"), "--name", "again", "--quiet"]
    assert main(again) == 0
    second = json.loads((tmp_path / "runs" / "again" / "config.json").read_text())
    assert {k: second[k] for k in ("epochs", "seed", "hyper", "cutoff")} == {
        k: resolved[k] for k in ("epochs", "seed", "hyper", "cutoff")
    }
    config.write_text("data: x\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(config)]) == 2


def test_tensorboard_logs_the_metrics_beside_metrics_csv(water_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gnnmd.cli import main

    args = ["train", "--data", str(water_run), "--model", "eqforce", "--hyper", "hidden=8", "--cutoff", "3.0"]
    args += ["--epochs", "2", "--electrostatics", "none", "--runs-dir", str(tmp_path), "--name", "tb", "--quiet"]
    assert main([*args, "--tensorboard"]) == 0
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    maes = [e.value for e in events.Scalars("val/force_mae")]
    with open(tmp_path / "tb" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert maes == pytest.approx([float(r["val_force_mae"]) for r in rows], rel=1e-6)
