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
import time
from dataclasses import asdict
from pathlib import Path

from gnnmd.files import atomic_write_text
from gnnmd.lammps.generate import protocol_from_options
from gnnmd.study.scales import FROZEN_PART, SCALES, STUDY, argon_budget
from gnnmd.study.steps import Step, command_options, run_steps


class Reproduction:
    """The folders of one reproduction (WORK/data, runs, evals, logs) and its steps."""

    def __init__(
        self,
        scale: str,
        work: Path,
        results: Path,
        jobs: int | None = None,
        progress: bool = True,
        device: str = "auto",
        families: tuple[str, ...] | None = None,
    ):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        self.scale_name, self.scale = scale, SCALES[scale]
        self.work, self.results = Path(work), Path(results)
        self.data, self.runs, self.evals, self.logs = (self.work / d for d in ("data", "runs", "evals", "logs"))
        self.jobs = jobs or self.scale.jobs
        self.progress = progress
        self.device = device  # for every training and evaluation step
        # the water runs this invocation trains, evaluates and fine-tunes (all, or those of `families`)
        known = {options["model"] for options in self.scale.water_runs.values()}
        if families and not set(families) <= known:
            raise ValueError(f"unknown families {sorted(set(families) - known)}; the {scale} scale has {sorted(known)}")
        self.water_runs = [run for run, options in self.scale.water_runs.items()
                           if not families or options["model"] in families]  # fmt: skip
        self.families = tuple(families or ())

    # ------------------------------------------------------------------------------------------ steps
    def generate_steps(self) -> list[Step]:
        steps = []
        for system, extra in self.scale.datasets.items():
            out = self.data / system
            self._check_dataset(system, extra, out)
            argv = ["generate", system, "--out", str(out), *command_options(extra), "--no-progress"]
            steps.append(Step(f"generate-{system}", argv, out / "manifest.json"))
        return steps

    def train_steps(self) -> list[Step]:
        common = [*command_options(self.scale.train_common), "--threads", "1", "--device", self.device, "--no-progress"]
        return [
            self._training(run, self.data / "water", ["train", *command_options(self.scale.water_runs[run]), *common])
            for run in self.water_runs
        ]

    def finetune_parents(self) -> list[str]:
        """The scale's fine-tuning parents among this invocation's water runs."""
        return [run for run in self.scale.finetune_from if run in self.water_runs]

    def argon_runs(self) -> list[dict]:
        """Every argon row: each water run fine-tuned on each frame count (encoders trained, and frozen where
        the family has encoders to freeze), and, for the runs in `scratch_from`, its recipe trained on argon
        alone with the same budget (the control that says what water pretraining is worth)."""
        runs = []
        for parent in self.finetune_parents():
            family = self._family(parent)
            for frames in self.scale.finetune_frames:
                for frozen in (False, True) if FROZEN_PART[family] else (False,):
                    runs.append({"name": self.finetune_name(parent, frames, frozen), "parent": parent,
                                 "frames": frames, "frozen": frozen, "train_system": "water+argon"})  # fmt: skip
        for recipe in (run for run in self.scale.scratch_from if run in self.water_runs):
            for frames in self.scale.finetune_frames:
                runs.append({"name": self.scratch_name(recipe, frames), "parent": None, "recipe": recipe,
                             "frames": frames, "frozen": None, "train_system": "argon"})  # fmt: skip
        return runs

    def finetune_steps(self) -> list[Step]:
        steps = []
        common = ["--checkpoint-every", "5", "--threads", "1", "--device", self.device, "--no-progress"]
        for run in self.argon_runs():
            family = self._family(run["parent"] or run["recipe"])
            options = argon_budget(self.scale.finetune_options[family], run["frames"])
            if run["parent"]:
                head = ["finetune", "--from", str(self.runs / run["parent"] / "best.pt")]
                head += ["--freeze", FROZEN_PART[family]] if run["frozen"] else []
            else:  # the water recipe's model, trained from scratch on argon
                recipe = self.scale.water_runs[run["recipe"]]
                head = ["train", "--model", family, "--electrostatics", "none",
                        *command_options({"hyper": recipe.get("hyper", {})})]  # fmt: skip
            argv = [*head, "--max-frames", str(run["frames"]), *command_options(options), *common]
            steps.append(self._training(run["name"], self.data / "argon-train", argv))
        return steps

    def evaluations(self) -> list[tuple[str, str, str, dict]]:
        """(run, eval system, split, row fields) of every evaluation in the table."""
        planned = []
        for run in self.water_runs:
            planned += [(run, "water", "val", {}), (run, "big-water", "all", {}), (run, "argon", "all", {})]
        for run in self.argon_runs():
            fields = {"finetune_frames": run["frames"], "frozen": run["frozen"], "parent": run["parent"],
                      "train_system": run["train_system"]}  # fmt: skip
            planned.append((run["name"], "argon", "all", fields))
        return planned

    def evaluate_steps(self, planned) -> list[Step]:
        steps = []
        for run, system, split, _ in planned:
            out = self.evals / f"{run}__{system}-{split}.json"
            # a water model on argon is zero-shot: atom types it was not trained on
            zero_shot = ["--allow-unknown-types"] if run in self.water_runs and system == "argon" else []
            argv = ["evaluate", "--model", str(self.runs / run / "best.pt"), "--data", str(self.data / system),
                    "--split", split, "--out", str(out), "--threads", "1", "--device", self.device,
                    "--no-progress", *zero_shot]  # fmt: skip
            steps.append(Step(f"evaluate-{run}-{system}", argv, out))
        return steps

    @staticmethod
    def finetune_name(parent: str, frames: int, frozen: bool) -> str:
        return f"{parent.removesuffix('-water')}-argon{frames}{'-frozen' if frozen else ''}"

    @staticmethod
    def scratch_name(recipe: str, frames: int) -> str:
        return f"{recipe.removesuffix('-water').split('-')[0]}-argon{frames}-scratch"

    def _family(self, run: str) -> str:
        return self.scale.water_runs[run]["model"]

    def _training(self, name: str, data: Path, argv: list[str]) -> Step:
        """A train/finetune step on `data`: resumes a run killed after a checkpoint, restarts one killed before."""
        run_dir = self.runs / name
        argv = [*argv, "--data", str(data), "--runs-dir", str(self.runs), "--name", name]
        if run_dir.exists():
            self._check_run(run_dir, data)
        if not (run_dir / "summary.json").exists() and run_dir.exists():
            has_checkpoint = (
                any((run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").is_dir() else False
            )
            argv.append("--resume" if has_checkpoint else "--overwrite")
        return Step(f"train-{name}", argv, run_dir / "summary.json")

    def _check_run(self, run_dir: Path, data: Path) -> None:
        """An existing run must be this reproduction's (same data), or its results would be misattributed."""
        config_file = run_dir / "config.json"
        if not config_file.exists():
            return
        config = json.loads(config_file.read_text())
        data = data.resolve()
        if Path(config["data"]).resolve() != data:
            raise ValueError(f"{run_dir}: an existing run trained on {config['data']}, not {data}; use another --work")

    def _check_dataset(self, system: str, extra: list[str], out: Path) -> None:
        """An existing dataset must have been made with this scale's protocol."""
        manifest_file = out / "manifest.json"
        if not manifest_file.exists():
            return
        wanted = asdict(protocol_from_options(system, **extra))
        found = json.loads(manifest_file.read_text())["protocol"]
        differ = [k for k in wanted if k in found and _plain(found[k]) != _plain(wanted[k])]
        if differ:
            detail = ", ".join(f"{k}={found[k]} (want {wanted[k]})" for k in differ)
            raise ValueError(f"{out}: made with another protocol: {detail}; use another --work or move it away")

    # ------------------------------------------------------------------------------------------ running
    def run_steps(self, label: str, steps: list[Step], jobs: int) -> None:
        run_steps(label, steps, jobs, self.logs, self.progress)

    def run(self) -> dict:
        started = time.time()
        self.run_steps("generate", self.generate_steps(), jobs=1)  # LAMMPS uses both cores itself
        self.run_steps("train on water", self.train_steps(), self.jobs)
        self.run_steps("fine-tune on argon", self.finetune_steps(), self.jobs)
        planned = self.evaluations()
        self.evals.mkdir(parents=True, exist_ok=True)  # gnnmd evaluate writes only into a folder that exists
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
                "train_system": fields.get("train_system", "water"),
                "eval_system": system,
                "split": split,
                "finetune_frames": fields.get("finetune_frames", 0),
                "frozen": fields.get("frozen"),
                "force_mae": result["force_mae"],
                "force_rmse": result["force_rmse"],
                "energy": result.get("energy"),
                "energy_mae_per_atom": result.get("energy_mae_per_atom"),
                "energy_mae_per_atom_about_offset": result.get("energy_mae_per_atom_about_offset"),
                "mean_abs_force": result["mean_abs_force"],
                "run": run,
                "parent": fields.get("parent"),
                "atoms": result["atoms_per_frame"],
                "eval_frames": result["frames"],
                "train_minutes": json.loads((self.runs / run / "summary.json").read_text())["minutes"],
            })  # fmt: skip
        return rows

    def write(self, rows: list[dict], minutes: float) -> dict:
        from gnnmd.study.report import markdown_table, write_figures

        self.results.mkdir(parents=True, exist_ok=True)
        command = ["gnnmd", "reproduce", "--scale", self.scale_name, "--work", str(self.work)]
        if self.families:  # a part of the study: the other families' rows stay as they were
            command += ["--families", *self.families]
            rows = self._kept_rows({row["run"] for row in rows}) + rows
        report = {
            "benchmark": "reproduction",
            "scale": self.scale_name,
            "scale_description": self.scale.description,
            "command": " ".join(command),
            "minutes_this_invocation": minutes,
            "machine": {"cpus": os.cpu_count(), "jobs": self.jobs},
            "study": STUDY,
            "rows": rows,
        }
        atomic_write_text(self.results / "reproduction.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(self.results / "reproduction.md", markdown_table(rows, STUDY) + "\n")
        write_figures(self, rows, self.results / "figures")
        return report

    def _kept_rows(self, remade: set[str]) -> list[dict]:
        """The rows of an earlier reproduction.json (same scale) that this invocation did not remake."""
        path = self.results / "reproduction.json"
        if not path.exists():
            return []
        old = json.loads(path.read_text())
        if old.get("scale") != self.scale_name:
            raise ValueError(
                f"{path}: holds the {old.get('scale')} scale, not {self.scale_name}; use another --results"
            )
        return [row for row in old["rows"] if row["run"] not in remade]


def _plain(value):
    """JSON-comparable form (tuples as lists, ints as floats)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


TABLE_MARKERS = ("<!-- reproduction table: start -->", "<!-- reproduction table: end -->")


def doc_table_block(doc: Path) -> tuple[str, str]:
    """The text of a Markdown file before and after its reproduction table block; checked before a
    three-hour run, so a file without the block is refused before anything is computed."""
    start, end = TABLE_MARKERS
    text = doc.read_text()
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{doc}: needs one '{start}' line and, after it, one '{end}' line")
    head, rest = text.split(start, 1)
    return head, rest.split(end, 1)[1]


def update_doc(doc: Path, table: str) -> None:
    """Put the table between the reproduction markers of a document (docs/reproduction.md), changing
    nothing else in it: the docs quote the latest results, and no other text of theirs is gnnmd's to write."""
    head, tail = doc_table_block(doc)
    start, end = TABLE_MARKERS
    atomic_write_text(doc, f"{head}{start}\n{table}\n{end}{tail}")
