"""`gnnmd reproduce --scale quick`: the whole study pipeline on tiny LAMMPS systems (a smoke test of the
pipeline, not of accuracy): every row of the table, the figures, a rerun that redoes nothing, and a clear
error for a dataset made with another protocol."""

from __future__ import annotations

import json
import math

import pytest

from gnnmd.cli import main
from gnnmd.study.reproduction import SCALES, TABLE_MARKERS, Reproduction
from gnnmd.study.scales import FROZEN_PART, argon_budget

pytestmark = pytest.mark.slow

ROW_KEYS = {"model", "electrostatics", "train_system", "eval_system", "finetune_frames", "frozen", "force_mae",
            "force_rmse", "mean_abs_force"}  # fmt: skip


@pytest.fixture(scope="module")
def table_doc(tmp_path_factory):
    """A document with a reproduction table block, for --update-doc."""
    doc = tmp_path_factory.mktemp("docs") / "reproduction.md"
    doc.write_text(f"# Ours\n{TABLE_MARKERS[0]}\nold table\n{TABLE_MARKERS[1]}\nstays\n")
    return doc


@pytest.fixture(scope="module")
def quick(tmp_path_factory, table_doc):
    work = tmp_path_factory.mktemp("reproduce")
    args = ["reproduce", "--scale", "quick", "--work", str(work), "--no-progress", "--update-doc", str(table_doc)]
    assert main(args) == 0
    return work


def test_quick_reproduction_has_every_row_and_figure(quick, table_doc):
    scale = SCALES["quick"]
    report = json.loads((quick / "results" / "reproduction.json").read_text())
    rows = report["rows"]
    family = {run: options["model"] for run, options in scale.water_runs.items()}
    frozen_options = {p: (False, True) if FROZEN_PART[family[p]] else (False,) for p in scale.finetune_from}
    tuned_rows = sum(len(options) for options in frozen_options.values()) * len(scale.finetune_frames)
    controls = len(scale.scratch_from) * len(scale.finetune_frames)
    assert len(rows) == 3 * len(scale.water_runs) + tuned_rows + controls
    assert all(ROW_KEYS <= set(row) for row in rows)
    assert all(math.isfinite(row["force_mae"]) and row["force_mae"] > 0 for row in rows)
    evaluated = {(row["run"], row["eval_system"]) for row in rows}
    for run in scale.water_runs:
        assert {(run, "water"), (run, "big-water"), (run, "argon")} <= evaluated
    tuned = {(row["parent"], row["finetune_frames"], row["frozen"]) for row in rows if row["parent"]}
    assert tuned == {(p, n, f) for p in scale.finetune_from for n in scale.finetune_frames for f in frozen_options[p]}
    scratch = {(row["model"], row["finetune_frames"]) for row in rows if row["train_system"] == "argon"}
    assert scratch == {(family[r], n) for r in scale.scratch_from for n in scale.finetune_frames}
    manifest = json.loads((quick / "data" / "water" / "manifest.json").read_text())
    assert manifest["source"] == "LAMMPS"

    table = (quick / "results" / "reproduction.md").read_text()
    assert "4.18" in table and "4.24" in table and table.count("\n| ") == len(rows) + 3  # study rows + ours
    assert table_doc.read_text() == f"# Ours\n{TABLE_MARKERS[0]}\n{table}\n{TABLE_MARKERS[1]}\nstays\n"
    figures = {p.name for p in (quick / "results" / "figures").iterdir()}
    expected = {"error_vs_system_size.png", "error_vs_finetune_frames.png"}
    expected |= {f"{run}_loss.png" for run in scale.water_runs} | {
        f"{run}_interactions.png" for run in scale.water_runs
    }
    expected |= {f"argon_interactions_{p.removesuffix('-water')}.png" for p in scale.finetune_from}
    assert expected <= figures


def test_rerun_redoes_nothing(quick):
    logs = {p.name: p.read_text() for p in (quick / "logs").iterdir()}
    assert main(["reproduce", "--scale", "quick", "--work", str(quick), "--no-progress"]) == 0
    assert {p.name: p.read_text() for p in (quick / "logs").iterdir()} == logs


def test_dataset_from_another_protocol_is_refused(quick, tmp_path):
    manifest_file = quick / "data" / "argon" / "manifest.json"
    work = tmp_path / "other"
    (work / "data" / "argon").mkdir(parents=True)
    manifest = json.loads(manifest_file.read_text())
    manifest["protocol"]["count"] = 999
    (work / "data" / "argon" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"argon: made with another protocol: count=999"):
        Reproduction("quick", work, work / "results").generate_steps()


def test_one_family_is_redone_and_the_others_rows_are_kept(quick, tmp_path):
    """`--families csnequip` runs (here: finds done) that family's steps only and keeps the other rows."""
    results = tmp_path / "results"
    results.mkdir()
    before = json.loads((quick / "results" / "reproduction.json").read_text())
    marked = [dict(row, force_mae=123.0) for row in before["rows"]]  # what a file from an earlier run holds
    (results / "reproduction.json").write_text(json.dumps({**before, "rows": marked}))
    logs = {p.name: p.read_text() for p in (quick / "logs").iterdir()}
    argv = ["reproduce", "--scale", "quick", "--work", str(quick), "--results", str(results), "--no-progress"]
    assert main([*argv, "--families", "csnequip"]) == 0
    assert {p.name: p.read_text() for p in (quick / "logs").iterdir()} == logs
    after = json.loads((results / "reproduction.json").read_text())
    assert len(after["rows"]) == len(before["rows"]) and "--families csnequip" in after["command"]
    for row in after["rows"]:
        assert (row["force_mae"] == 123.0) == (row["model"] != "csnequip"), row["run"]
    with pytest.raises(ValueError, match="unknown families"):
        Reproduction("quick", quick, results, families=("schnet",))


def test_argon_rows_share_one_schedule_whatever_their_frames():
    """Equal budget: every frame count trains at least `steps` steps and `min_epochs` epochs and ends at
    the same fraction of its peak learning rate, with no early stop."""
    options = SCALES["default"].finetune_options["csnequip"]
    for frames in (10, 100, 1000):
        fields = argon_budget(options, frames)
        steps = fields["epochs"] * round(frames * 0.9) / fields["batch_size"]
        assert steps >= options["steps"] and fields["epochs"] >= options["min_epochs"]
        assert fields["lr_decay"] ** fields["epochs"] == pytest.approx(options["final_lr"])
        assert fields["patience"] == fields["epochs"] and "max_minutes" not in fields
    assert argon_budget({"epochs": 3}, 10) == {"epochs": 3}
