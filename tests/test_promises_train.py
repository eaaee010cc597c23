"""What the README promises about a training run's settings and folder, against hostile input: a config
file that is a YAML bomb, of the wrong types or not YAML at all is refused in one line naming the file
and the key before anything is written (so the retry is not blocked); `--overwrite` leaves a run folder
that holds anything gnnmd did not write; and every setting has one owner (TrainConfig's defaults,
FINETUNE_DEFAULTS and the parent's when fine-tuning; the graph cutoff in `cutoff` alone)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from gnnmd.cli import build_parser, main
from gnnmd.train.config import FINETUNE_DEFAULTS, TrainConfig, make_config

TINY = "model: mpnn\nhyper: {hidden: 8, layers: 1}\nbatch_size: 4\nelectrostatics: none\nprogress: false\n"


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(args, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


# ---------------------------------------------------------------- config files


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"data: {tmp_path}\nhyper:\n" + "".join(f"  {line}\n" for line in lines))
    started = time.perf_counter()
    code, err = run_cli(["train", "--config", bomb, "--runs-dir", tmp_path / "runs"], capsys)
    one_line_error(code, err, str(bomb), "alias")
    assert time.perf_counter() - started < 5 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, text", [("deep.json", "[" * 200_000), ("big.yaml", "#" * (2 << 20))])
def test_a_config_too_deep_or_too_big_is_refused(tmp_path, capsys, name, text):
    config = tmp_path / name
    config.write_text(text)
    code, err = run_cli(["train", "--config", config, "--runs-dir", tmp_path / "runs"], capsys)
    one_line_error(code, err, str(config))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "text, needles",
    [
        ("epochs: 1.5\n", ["epochs", "integer", "1.5"]),
        ("epochs: true\n", ["epochs", "integer", "True"]),  # a bool is not a count: it trained 1 epoch
        ("hyper: 5\n", ["hyper", "mapping"]),
        ("data: 5\n", ["data", "string"]),
        ("runs_dir: [a, b]\n", ["runs_dir", "string"]),
        ("cutoff: .nan\n", ["cutoff", "finite"]),
        ("epochs: [2\n", ["not valid YAML", "line"]),  # a syntax error
    ],
)
def test_a_bad_config_file_is_one_line_and_writes_nothing(water_run, tmp_path, capsys, text, needles):
    config = tmp_path / "run.yaml"
    config.write_text(f"{TINY}data: {water_run}\nname: r\nepochs: 1\n{text}")
    runs = tmp_path / "runs"
    code, err = run_cli(["train", "--config", config, "--runs-dir", runs], capsys)
    one_line_error(code, err, str(config), *needles)
    assert not runs.exists()


def test_after_a_refused_config_the_retry_trains(water_run, tmp_path, capsys):
    config, runs = tmp_path / "run.yaml", tmp_path / "runs"
    config.write_text(f"{TINY}data: {water_run}\nname: r\nepochs: 1.5\n")
    one_line_error(*run_cli(["train", "--config", config, "--runs-dir", runs, "--threads", 1], capsys), "epochs")
    config.write_text(f"{TINY}data: {water_run}\nname: r\nepochs: 1\n")
    assert run_cli(["train", "--config", config, "--runs-dir", runs, "--threads", 1, "--quiet"], capsys)[0] == 0
    assert json.loads((runs / "r" / "summary.json").read_text())["epochs_run"] == 1


def test_a_config_made_in_python_is_checked_the_same_way(water_run):
    for bad in (dict(epochs=True), dict(batch_size=2.0), dict(hyper=[1]), dict(data=None), dict(freeze="mp1")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**{"data": str(water_run), **bad}).check()


# ---------------------------------------------------------------- --overwrite and what is in the folder


def tiny_run(water_run, runs, name, capsys, *extra):
    args = ["train", "--data", water_run, "--runs-dir", runs, "--name", name, "--model", "mpnn", "--hyper", "hidden=8"]
    args += ["--hyper", "layers=1", "--epochs", 1, "--batch-size", 4, "--electrostatics", "none", "--threads", 1]
    return run_cli([*args, "--no-progress", "--quiet", *extra], capsys)


@pytest.mark.parametrize(
    "mine, named",
    [
        ("notes.txt", "notes.txt"),
        ("checkpoints/mine/model.pt", "checkpoints/mine/"),
        ("checkpoints/epoch_0001.pt.bak", "checkpoints/epoch_0001.pt.bak"),
    ],
)
def test_overwrite_refuses_a_run_folder_that_holds_something_of_yours(water_run, tmp_path, capsys, mine, named):
    runs = tmp_path / "runs"
    assert tiny_run(water_run, runs, "r", capsys)[0] == 0
    (runs / "r" / mine).parent.mkdir(parents=True, exist_ok=True)
    (runs / "r" / mine).write_text("mine")
    before = checksums(runs)
    code, err = tiny_run(water_run, runs, "r", capsys, "--overwrite")
    one_line_error(code, err, str(runs / "r"), named, "did not write")
    assert checksums(runs) == before and (runs / "r" / mine).read_text() == "mine"


def test_overwrite_replaces_a_run_with_gnnmds_own_outputs_only(water_run, tmp_path, capsys):
    """A run folder holding what training and `gnnmd evaluate` wrote there is gnnmd's to replace."""
    runs = tmp_path / "runs"
    assert tiny_run(water_run, runs, "r", capsys, "--tensorboard")[0] == 0
    out = runs / "r" / "eval-water-val.json"  # as quickstart writes it (evaluate's default is the current folder)
    args = ["evaluate", "--model", str(runs / "r" / "best.pt"), "--data", str(water_run), "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    assert list((runs / "r").glob("eval-*.json")) and list((runs / "r" / "tensorboard").iterdir())
    code, _ = tiny_run(water_run, runs, "r", capsys, "--overwrite", "--seed", 5)
    assert code == 0 and json.loads((runs / "r" / "config.json").read_text())["seed"] == 5
    assert not list((runs / "r").glob("eval-*.json"))  # the old run's outputs went with it


# ---------------------------------------------------------------- one owner per setting


def parsed(*argv) -> TrainConfig:
    from gnnmd.cli.train import _config

    args = build_parser().parse_args([str(a) for a in argv])
    return _config(args, finetune=args.command == "finetune")


def test_training_defaults_are_trainconfigs_alone(water_run, tmp_path):
    assert parsed("train", "--data", water_run) == TrainConfig(data=str(water_run))
    config = tmp_path / "run.yaml"  # no flag's default hides a file's value
    config.write_text("device: cpu\nquiet: true\nruns_dir: elsewhere\nelectrostatics: none\nloss: mse\n")
    from_file = parsed("train", "--data", water_run, "--config", config)
    assert (from_file.device, from_file.quiet, from_file.runs_dir) == ("cpu", True, "elsewhere")
    assert (from_file.electrostatics, from_file.loss) == ("none", "mse")
    flags = parsed("train", "--data", water_run, "--epochs", 3, "--no-progress", "--hyper", "hidden=8")
    assert (flags.epochs, flags.progress, flags.hyper) == (3, False, {"hidden": 8})
    with pytest.raises(ValueError, match="--cutoff"):
        parsed("train", "--data", water_run, "--hyper", "cutoff=5")


def test_finetune_defaults_come_from_trainconfig_and_the_parent(argon_run, argon_model, tmp_path):
    tuned = parsed("finetune", "--from", argon_model, "--data", argon_run)
    assert {key: getattr(tuned, key) for key in FINETUNE_DEFAULTS} == FINETUNE_DEFAULTS
    assert tuned.cutoff == 6.0 and tuned.model == "eqforce" and tuned.name == f"eqforce-finetune-{argon_run.name}"
    assert tuned.batch_size == TrainConfig.batch_size and tuned.freeze == ()
    config = tmp_path / "tune.yaml"
    config.write_text("epochs: 7\ncutoff: 7.0\nfreeze: [encoders, mp1]\nmodel: mpnn\n")
    from_file = parsed("finetune", "--from", argon_model, "--data", argon_run, "--config", config, "--lr", 0.01)
    assert (from_file.epochs, from_file.cutoff, from_file.lr, from_file.freeze) == (7, 7.0, 0.01, ("encoders", "mp1"))
    assert from_file.model == "eqforce"  # always the parent's family
    assert parsed("finetune", "--from", argon_model, "--data", argon_run, "--config", config, "--epochs", 2).epochs == 2


def test_the_cutoff_has_one_owner_in_a_config_file(water_run, tmp_path):
    """A run's config.json records the cutoff twice (its own and the model's hyper-parameters); as a
    --config, `cutoff` is the one that counts, so --cutoff may change it; a file whose two disagree is refused."""
    record = tmp_path / "config.json"
    record.write_text(json.dumps({"data": str(water_run), "cutoff": 3.4, "hyper": {"hidden": 8, "cutoff": 3.4}}))
    moved = make_config({"cutoff": 5.0}, record)
    assert moved.cutoff == 5.0 and moved.hyper == {"hidden": 8}
    record.write_text(json.dumps({"data": str(water_run), "cutoff": 3.4, "hyper": {"cutoff": 4.0}}))
    with pytest.raises(ValueError, match=f"{record}.*hyper.cutoff"):
        make_config({}, record)
