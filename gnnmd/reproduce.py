"""`gnnmd reproduce`: the reference study end to end, as one resumable command.

Water (216 molecules) -> each model family trained on it -> evaluated on the water validation split, on
big water (1600 molecules) and zero-shot on argon -> fine-tuned on argon with several frame counts, encoders
frozen or not -> evaluated on the argon test set. Every step is a public gnnmd command run as a subprocess
(its log in WORK/logs/), up to `--jobs` side by side with one torch thread each; a step whose output
exists is skipped, so a killed run continues where it stopped (a half-trained run resumes from its last
checkpoint). Writes reproduction.json, reproduction.md (beside the study's own numbers) and figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

SYSTEMS = ("water", "big-water", "argon", "argon-train")
# what the study reports (force MAE, kcal/mol/A): water validation, big water, argon before fine-tuning
STUDY = [
    {"eval_system": "water", "split": "val", "force_mae": 4.18, "note": "validation split"},
    {"eval_system": "big-water", "split": "all", "force_mae": 4.24, "note": "1600 molecules"},
    {"eval_system": "argon", "split": "all", "force_mae": None, "note": "unusable before fine-tuning"},
]
FROZEN_PART = {"nequip": "embedding", "eqforce": "encoders", "mpnn": "encoders"}  # the "encoders" of a family


@dataclass(frozen=True)
class Scale:
    """What one scale of the reproduction runs: `gnnmd generate` arguments per system, `gnnmd train`
    arguments per water run, and the argon fine-tuning grid."""

    description: str
    datasets: dict[str, list[str]]
    water_runs: dict[str, list[str]]
    finetune_from: tuple[str, ...]
    finetune_frames: tuple[int, ...]
    finetune_args: dict[str, list[str]]  # per model family
    jobs: int = 2
    train_common: list[str] = field(default_factory=lambda: ["--checkpoint-every", "1"])


_NEQUIP = ["--model", "nequip", "--cutoff", "4.0", "--hyper", "channels=16", "--hyper", "layers=2", "--hyper", "l_max=1",
           "--batch-size", "1", "--lr", "0.005", "--warmup", "1", "--lr-decay", "0.9"]  # fmt: skip
_EQFORCE = ["--model", "eqforce", "--electrostatics", "none", "--cutoff", "3.4", "--batch-size", "2", "--lr", "1e-3",
            "--warmup", "2", "--lr-decay", "0.85", "--hyper", "hidden=64"]  # fmt: skip
# the study's network, with a Gaussian radial basis and no dropout: on the raw distance and with dropout 0.1
# it collapsed to predicting zero on this data (see README, "Models")
_MPNN = ["--model", "mpnn", "--electrostatics", "none", "--cutoff", "3.4", "--batch-size", "4", "--lr", "1e-3",
         "--warmup", "1", "--lr-decay", "0.95", "--hyper", "hidden=64", "--hyper", "radial=16", "--hyper", "dropout=0.0"]  # fmt: skip
# argon's LJ tail matters out to ~7 A (truncating it at 4 A alone costs 0.10 kcal/mol/A), so fine-tuning
# stretches every model to a 7 A cutoff
_FINETUNE_NEQUIP = ["--cutoff", "7.0", "--lr", "5e-3", "--lr-decay", "0.9", "--warmup", "1", "--batch-size", "1"]
_FINETUNE_DIRECT = ["--cutoff", "7.0", "--lr", "1e-3", "--lr-decay", "0.9", "--warmup", "1", "--batch-size", "2"]

SCALES = {
    "quick": Scale(
        description="minutes on 2 CPU cores: tiny systems and models, one epoch each (a smoke test, not a result)",
        datasets={
            "water": ["--molecules", "32", "--frames", "12", "--segments", "2", "--stride", "10", "--equil-steps", "100"],
            "big-water": ["--molecules", "96", "--frames", "2", "--equil-steps", "100"],
            "argon": ["--atoms", "128", "--frames", "4", "--stride", "20", "--equil-steps", "200"],
            "argon-train": ["--atoms", "128", "--frames", "16", "--stride", "20", "--equil-steps", "200"],
        },
        water_runs={
            "nequip-pme-water": ["--model", "nequip", "--electrostatics", "pme", "--cutoff", "4.0", "--hyper",
                                 "channels=4", "--hyper", "layers=1", "--epochs", "1", "--batch-size", "2"],
            "eqforce-water": ["--model", "eqforce", "--electrostatics", "none", "--cutoff", "3.4", "--hyper", "hidden=8", "--hyper", "layers=1",
                              "--epochs", "1", "--batch-size", "2"],
            "mpnn-water": ["--model", "mpnn", "--electrostatics", "none", "--cutoff", "3.4", "--hyper", "hidden=8", "--hyper", "layers=2", "--hyper",
                           "radial=4", "--hyper", "dropout=0.0", "--epochs", "1", "--batch-size", "2"],
        },
        finetune_from=("nequip-pme-water", "mpnn-water"),
        finetune_frames=(4, 16),
        finetune_args={family: ["--cutoff", "5.0", "--epochs", "1", "--batch-size", "2"] for family in FROZEN_PART},
    ),
    "default": Scale(
        description="about three hours on 2 CPU cores (two trainings side by side, one thread each)",
        datasets={
            # the default water protocol with 1000 equilibration steps (2 ps) instead of 5000, to save time
            "water": ["--equil-steps", "1000"],
            "big-water": [],
            "argon": [],
            "argon-train": [],
        },
        water_runs={
            "nequip-pme-water": [*_NEQUIP, "--electrostatics", "pme", "--epochs", "100", "--patience", "100",
                                 "--max-minutes", "45"],
            "nequip-none-water": [*_NEQUIP, "--electrostatics", "none", "--epochs", "100", "--patience", "100",
                                  "--max-minutes", "45"],
            "eqforce-water": [*_EQFORCE, "--epochs", "15", "--max-minutes", "30"],
            "mpnn-water": [*_MPNN, "--epochs", "14", "--max-minutes", "30"],
        },
        finetune_from=("nequip-pme-water", "eqforce-water", "mpnn-water"),
        finetune_frames=(10, 100, 1000),
        finetune_args={
            "nequip": [*_FINETUNE_NEQUIP, "--epochs", "100", "--patience", "15", "--max-minutes", "8"],
            "eqforce": [*_FINETUNE_DIRECT, "--epochs", "100", "--patience", "15", "--max-minutes", "3"],
            "mpnn": [*_FINETUNE_DIRECT, "--epochs", "100", "--patience", "15", "--max-minutes", "3"],
        },
    ),
    "full": Scale(
        description="the study's protocol (10100 water frames, 30 epochs): many hours; for a GPU",
        datasets={system: ["--study"] for system in SYSTEMS},
        water_runs={
            "nequip-pme-water": [*_NEQUIP, "--electrostatics", "pme", "--epochs", "30"],
            "nequip-none-water": [*_NEQUIP, "--electrostatics", "none", "--epochs", "30"],
            "eqforce-water": [*_EQFORCE, "--epochs", "30"],
            "mpnn-water": [*_MPNN, "--epochs", "30"],
        },
        finetune_from=("nequip-pme-water", "eqforce-water", "mpnn-water"),
        finetune_frames=(10, 100, 1000),
        finetune_args={
            "nequip": [*_FINETUNE_NEQUIP, "--epochs", "30"],
            "eqforce": [*_FINETUNE_DIRECT, "--epochs", "30"],
            "mpnn": [*_FINETUNE_DIRECT, "--epochs", "30"],
        },
        jobs=1,
    ),
}


@dataclass
class Step:
    """One gnnmd command; done when `output` exists."""

    name: str
    argv: list[str]
    output: Path


class Reproduction:
    """The folders of one reproduction (WORK/data, runs, evals, logs) and its steps."""

    def __init__(self, scale: str, work: Path, results: Path, jobs: int | None = None, progress: bool = True):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        self.scale_name, self.scale = scale, SCALES[scale]
        self.work, self.results = Path(work), Path(results)
        self.data, self.runs, self.evals, self.logs = (self.work / d for d in ("data", "runs", "evals", "logs"))
        self.jobs = jobs or self.scale.jobs
        self.progress = progress

    # ------------------------------------------------------------------------------------------ steps
    def generate_steps(self) -> list[Step]:
        steps = []
        for system, extra in self.scale.datasets.items():
            out = self.data / system
            self._check_dataset(system, extra, out)
            steps.append(Step(f"generate-{system}", ["generate", system, "--out", str(out), *extra, "--no-progress"],
                              out / "manifest.json"))  # fmt: skip
        return steps

    def train_steps(self) -> list[Step]:
        common = [*self.scale.train_common, "--threads", "1", "--no-progress"]
        return [
            self._training(name, ["train", "--data", str(self.data / "water"), *args, *common])
            for name, args in self.scale.water_runs.items()
        ]

    def finetune_steps(self) -> list[Step]:
        steps = []
        for parent in self.scale.finetune_from:
            family = self._family(parent)
            for frames in self.scale.finetune_frames:
                for frozen in (False, True):
                    name = self.finetune_name(parent, frames, frozen)
                    argv = ["finetune", "--from", str(self.runs / parent / "best.pt"),
                            "--data", str(self.data / "argon-train"), "--max-frames", str(frames),
                            *(["--freeze", FROZEN_PART[family]] if frozen else []), *self.scale.finetune_args[family],
                            "--checkpoint-every", "5", "--threads", "1", "--no-progress"]  # fmt: skip
                    steps.append(self._training(name, argv))
        return steps

    def evaluations(self) -> list[tuple[str, str, str, dict]]:
        """(run, eval system, split, row fields) of every evaluation in the table."""
        planned = []
        for run in self.scale.water_runs:
            planned += [(run, "water", "val", {}), (run, "big-water", "all", {}), (run, "argon", "all", {})]
        for parent in self.scale.finetune_from:
            for frames in self.scale.finetune_frames:
                for frozen in (False, True):
                    fields = {"finetune_frames": frames, "frozen": frozen, "parent": parent}
                    planned.append((self.finetune_name(parent, frames, frozen), "argon", "all", fields))
        return planned

    def evaluate_steps(self, planned) -> list[Step]:
        steps = []
        for run, system, split, _ in planned:
            out = self.evals / f"{run}__{system}-{split}.json"
            argv = ["evaluate", "--model", str(self.runs / run / "best.pt"), "--data", str(self.data / system),
                    "--split", split, "--out", str(out), "--threads", "1", "--no-progress"]  # fmt: skip
            steps.append(Step(f"evaluate-{run}-{system}", argv, out))
        return steps

    @staticmethod
    def finetune_name(parent: str, frames: int, frozen: bool) -> str:
        return f"{parent.removesuffix('-water')}-argon{frames}{'-frozen' if frozen else ''}"

    def _family(self, run: str) -> str:
        args = self.scale.water_runs[run]
        return args[args.index("--model") + 1]

    def _training(self, name: str, argv: list[str]) -> Step:
        """A train/finetune step: resumes a run killed after a checkpoint, restarts one killed before."""
        run_dir = self.runs / name
        argv = [*argv, "--runs-dir", str(self.runs), "--name", name]
        if not (run_dir / "summary.json").exists() and run_dir.exists():
            self._check_run(run_dir, argv)
            has_checkpoint = any((run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").is_dir() else False
            argv.append("--resume" if has_checkpoint else "--overwrite")
        elif run_dir.exists():
            self._check_run(run_dir, argv)
        return Step(f"train-{name}", argv, run_dir / "summary.json")

    def _check_run(self, run_dir: Path, argv: list[str]) -> None:
        """An existing run must be this reproduction's (same data), or its results would be misattributed."""
        config_file = run_dir / "config.json"
        if not config_file.exists():
            return
        config = json.loads(config_file.read_text())
        data = Path(argv[argv.index("--data") + 1]).resolve()
        if Path(config["data"]).resolve() != data:
            raise ValueError(f"{run_dir}: an existing run trained on {config['data']}, not {data}; use another --work")

    def _check_dataset(self, system: str, extra: list[str], out: Path) -> None:
        """An existing dataset must have been made with this scale's protocol."""
        manifest_file = out / "manifest.json"
        if not manifest_file.exists():
            return
        from gnnmd.cli import build_parser, protocol_from_args

        wanted = asdict(protocol_from_args(build_parser().parse_args(["generate", system, "--out", str(out), *extra])))
        found = json.loads(manifest_file.read_text())["protocol"]
        differ = [k for k in wanted if k in found and _plain(found[k]) != _plain(wanted[k])]
        if differ:
            detail = ", ".join(f"{k}={found[k]} (want {wanted[k]})" for k in differ)
            raise ValueError(f"{out}: made with another protocol: {detail}; use another --work or move it away")

    # ------------------------------------------------------------------------------------------ running
    def run_steps(self, label: str, steps: list[Step], jobs: int) -> None:
        todo = [step for step in steps if not step.output.exists()]
        self.logs.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(steps), initial=len(steps) - len(todo), desc=label, unit="step", disable=not self.progress)
        failed = []

        def run(step: Step) -> None:
            log = self.logs / f"{step.name}.log"
            env = dict(os.environ, OMP_NUM_THREADS="1" if jobs > 1 else os.environ.get("OMP_NUM_THREADS", ""))
            with open(log, "a") as handle:
                handle.write(f"\n$ gnnmd {' '.join(step.argv)}\n")
                handle.flush()
                code = subprocess.call([sys.executable, "-m", "gnnmd.cli", *step.argv], stdout=handle,
                                       stderr=subprocess.STDOUT, env={k: v for k, v in env.items() if v != ""})  # fmt: skip
            if code != 0 or not step.output.exists():
                failed.append(f"{step.name} (exit {code}; log {log})")
            bar.update()

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(run, todo))
        bar.close()
        if failed:
            raise RuntimeError(f"{len(failed)} step(s) failed: " + "; ".join(failed))

    def run(self) -> dict:
        started = time.time()
        self.run_steps("generate", self.generate_steps(), jobs=1)  # LAMMPS uses both cores itself
        self.run_steps("train on water", self.train_steps(), self.jobs)
        self.run_steps("fine-tune on argon", self.finetune_steps(), self.jobs)
        planned = self.evaluations()
        self.run_steps("evaluate", self.evaluate_steps(planned), self.jobs)
        return self.write(self.rows(planned), minutes=(time.time() - started) / 60.0)

    # ------------------------------------------------------------------------------------------ results
    def rows(self, planned) -> list[dict]:
        rows = []
        for run, system, split, fields in planned:
            result = json.loads((self.evals / f"{run}__{system}-{split}.json").read_text())
            config = json.loads((self.runs / run / "config.json").read_text())
            rows.append({
                "model": config["model"],
                "electrostatics": config.get("electrostatics", "none"),
                "train_system": "water+argon" if fields else "water",
                "eval_system": system,
                "split": split,
                "finetune_frames": fields.get("finetune_frames", 0),
                "frozen": fields.get("frozen"),
                "force_mae": result["force_mae"],
                "force_rmse": result["force_rmse"],
                "mean_abs_force": result["mean_abs_force"],
                "run": run,
                "parent": fields.get("parent"),
                "atoms": result["atoms_per_frame"],
                "eval_frames": result["frames"],
                "train_minutes": json.loads((self.runs / run / "summary.json").read_text())["minutes"],
            })  # fmt: skip
        return rows

    def write(self, rows: list[dict], minutes: float) -> dict:
        from gnnmd.analysis.reproduction import markdown_table, write_figures

        self.results.mkdir(parents=True, exist_ok=True)
        report = {
            "benchmark": "reproduction",
            "scale": self.scale_name,
            "scale_description": self.scale.description,
            "command": " ".join(["gnnmd", "reproduce", "--scale", self.scale_name, "--work", str(self.work)]),
            "minutes_this_invocation": minutes,
            "machine": {"cpus": os.cpu_count(), "jobs": self.jobs},
            "study": STUDY,
            "rows": rows,
        }
        (self.results / "reproduction.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.results / "reproduction.md").write_text(markdown_table(rows, STUDY) + "\n")
        write_figures(self, rows, self.results / "figures")
        return report


def _plain(value):
    """JSON-comparable form (tuples as lists, ints as floats)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def update_readme(readme: Path, table: str) -> None:
    """Replace the block between the reproduction markers in README.md with the table."""
    start, end = "<!-- reproduction table: start -->", "<!-- reproduction table: end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme}: has no '{start}' ... '{end}' block to update")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{start}\n{table}\n{end}{tail}")
    shutil.move(tmp, readme)
