"""Validation force MAE of each model family on the 216-molecule water set, trained with a wall-clock
budget on 2 CPU cores: the energy model with and without PME beside mpnn and eqforce.

    python benchmarks/accuracy.py --data DIR [--runs-dir runs] [--collect-only]

Trains the runs of `gnnmd reproduce`'s default scale one after another (each stops after the epoch that
crosses its --max-minutes), then writes benchmarks/results/accuracy.json: rows {"model", "electrostatics",
"train_frames", "epochs", "train_minutes", "val_force_mae"} from each run's config.json / summary.json.
--collect-only skips the training and reads runs that already exist (e.g. WORK/runs of `gnnmd reproduce`,
which trains them two at a time)."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from common import RESULTS, write_results

from gnnmd.study.scales import SCALES
from gnnmd.study.steps import command_options

# the default scale of `gnnmd reproduce` defines the runs (one place for both), as `gnnmd train` options
SCALE = SCALES["default"]
RUNS = {name: command_options(options) for name, options in SCALE.water_runs.items()}
COMMON = [*command_options(SCALE.train_common), "--threads", "1", "--no-progress"]


def row_of(run_dir: Path) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "run": run_dir.name,
        "model": config["model"],
        "electrostatics": config.get("electrostatics", "none"),
        "train_frames": config["train_frames"],
        "val_frames": config["val_frames"],
        "epochs": summary["epochs_run"],
        "train_minutes": round(summary["minutes"], 1),
        "val_force_mae": summary["best_val_force_mae"],
        "data": config["data"],
        "hyper": config["hyper"],
        "cutoff": config["cutoff"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="216-molecule water dataset from gnnmd generate")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--runs", default=",".join(RUNS), help="which of the runs, comma-separated")
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    args = parser.parse_args()
    names = args.runs.split(",")
    if not args.collect_only:
        for name in names:
            command = ["gnnmd", "train", "--data", str(args.data), "--runs-dir", str(args.runs_dir), "--name", name,
                       *RUNS[name], *COMMON]  # fmt: skip
            print("$", " ".join(command), flush=True)
            subprocess.run(command, check=True)
    rows = [row_of(args.runs_dir / name) for name in names]
    for row in rows:
        print(f"{row['model']:>8} {row['electrostatics']:>5}: val force MAE {row['val_force_mae']:.3f} kcal/mol/A "
              f"({row['epochs']} epochs, {row['train_minutes']} min, {row['train_frames']} frames)")  # fmt: skip
    write_results(
        args.out,
        "accuracy",
        rows,
        commands={
            name: " ".join(["gnnmd", "train", "--data", "DATA", "--name", name, *RUNS[name], *COMMON]) for name in names
        },
        reference_study_val_force_mae=4.18,
    )


if __name__ == "__main__":
    main()
