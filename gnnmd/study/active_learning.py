"""`gnnmd learn`: active learning with LAMMPS as the teacher.

Each round: the committee (models trained alike, other seeds) runs MD at the state points asked for
(`gnnmd md --committee`, NVT by default, so each temperature is sampled as such); the dumped frames where
the committee's largest force deviation passes the threshold are labelled by a LAMMPS rerun of the
system's own force field (gnnmd.lammps.label); a new dataset lists the original segments (untouched,
by absolute path) plus every labelled segment so far, each marked "origin": "active-learning" (always
training frames: the validation split stays the original one); every member is fine-tuned on it
(`gnnmd finetune`, its own seed). A last exploration with the final committee measures where it stands.

The threshold, unless given, is the largest per-frame deviation of the starting committee on the
dataset's validation frames: frames unlike anything held out from the training data pass it.

Layout of OUT (each stage is skipped when its output exists, so a killed run continues):
  learn.json                    the plan (a rerun must ask for the same)
  threshold.json                the deviation threshold and how it was chosen
  round_NN/md_T<K>/             committee MD (summary.json, deviation.txt, trajectory.lammpstrj)
  round_NN/labels_T<K>/         labelled frames (a dataset segment) and selection.json
  round_NN/data/manifest.json   the dataset this round trains on
  round_NN/models/member_K/     fine-tuned members (best.pt)
  round_NN/report.json          the round; report.json: all rounds and the final check"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gnnmd.data.reader import ADDED_ORIGIN, read_manifest
from gnnmd.files import FolderLock, atomic_write_text
from gnnmd.lammps.label import dump_timesteps, label_frames
from gnnmd.lammps.md_reference import dataset_forcefield
from gnnmd.models.checkpoint import read_checkpoint
from gnnmd.study.steps import Step, run_steps


@dataclass(frozen=True)
class LearnPlan:
    """What `gnnmd learn` does; stored as OUT/learn.json."""

    data: str
    models: tuple
    rounds: int = 2
    temperatures: tuple = (300.0, 370.0, 400.0)
    steps: int = 5000
    timestep: float = 1.0
    dump_every: int = 20
    ensemble: str = "nvt"
    threshold: float | None = None
    max_frames: int = 20  # labelled per state point and round
    epochs: int = 2
    lr: float = 1e-3
    max_minutes: float | None = None
    seed: int = 1
    coulomb: str = "lammps"
    system: str | None = None  # the LAMMPS data file MD starts from (default: the dataset's first segment's)
    jobs: int = 2

    def check(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"active learning needs a committee of at least two models, got {len(self.models)}")
        if self.rounds < 1 or self.steps < 1 or self.max_frames < 1 or self.epochs < 1:
            raise ValueError("rounds, steps, max-frames and epochs must be positive")
        if self.ensemble not in ("nve", "nvt") or not self.temperatures:
            raise ValueError("give at least one temperature, and ensemble nve or nvt")


def _plain(plan: LearnPlan) -> dict:
    return json.loads(json.dumps(asdict(plan)))


class ActiveLearning:
    """The folders and stages of one active-learning run (see the module's doc)."""

    def __init__(self, plan: LearnPlan, out, progress: bool = True):
        plan.check()
        self.plan, self.out, self.progress = plan, Path(out).resolve(), progress
        self.data = Path(plan.data).resolve()
        self.base = read_manifest(self.data)
        segment = self.base["segments"][0]
        self.system = Path(plan.system) if plan.system else self.data / segment["data_file"]
        self.forcefield = dataset_forcefield(self.data)
        self.electrostatics = "pme" if read_checkpoint(plan.models[0]).get("electrostatics") else "none"

    def start(self) -> None:
        """Create OUT with the plan, or check that an existing OUT holds this plan."""
        plan_file = self.out / "learn.json"
        if plan_file.exists():
            found = json.loads(plan_file.read_text())
            wanted = _plain(self.plan)
            differ = [key for key in wanted if found.get(key) != wanted[key]]
            if differ:
                detail = ", ".join(f"{key}: {found.get(key)} (now {wanted[key]})" for key in differ)
                raise ValueError(f"{self.out}: holds another active-learning run ({detail}); use another --out")
        elif self.out.exists() and any(self.out.iterdir()):
            raise FileExistsError(f"{self.out}: exists and is not an active-learning run of gnnmd; use another --out")
        else:
            atomic_write_text(plan_file, json.dumps(_plain(self.plan), indent=2) + "\n")

    # ------------------------------------------------------------------------------------ the stages
    def threshold(self) -> float:
        """The plan's threshold, or the starting committee's largest per-frame deviation on the validation
        frames of the dataset (stored in threshold.json)."""
        stored = self.out / "threshold.json"
        if stored.exists():
            return float(json.loads(stored.read_text())["threshold"])
        if self.plan.threshold is not None:
            record = {"threshold": float(self.plan.threshold), "how": "given"}
        else:
            from gnnmd.inference.committee import evaluate_committee

            result, _ = evaluate_committee(list(self.plan.models), self.data, "val", progress=self.progress)
            frames = result["committee"]["frame_max_deviation"]
            record = {
                "threshold": float(max(frames)),
                "how": f"the largest per-frame force deviation of the committee on {len(frames)} validation frames",
                "validation_force_mae": result["force_mae"],
            }
        atomic_write_text(stored, json.dumps(record, indent=2) + "\n")
        return record["threshold"]

    def md_steps(self, folder: Path, members: list, round_index: int) -> list[Step]:
        plan, steps = self.plan, []
        for k, temperature in enumerate(plan.temperatures):
            out = folder / f"md_T{temperature:g}"
            argv = ["md", "--committee", *map(str, members), "--system", str(self.system), "--steps", str(plan.steps)]
            argv += ["--out", str(out), "--timestep", str(plan.timestep), "--ensemble", plan.ensemble]
            argv += ["--temperature", str(temperature), "--seed", str(plan.seed + 1000 * round_index + k)]
            argv += ["--dump-every", str(plan.dump_every), "--coulomb", plan.coulomb, "--overwrite", "--no-progress"]
            steps.append(Step(f"{folder.name}-md-T{temperature:g}", argv, out / "summary.json", accept=(0, 1)))
        return steps

    def select_and_label(self, md_dir: Path, labels_dir: Path, threshold: float) -> dict:
        """Frames of one MD run above the threshold (at most max_frames, spread over the run), labelled."""
        done = labels_dir / "selection.json"
        if done.exists():
            return json.loads(done.read_text())
        chosen, above, deviation = choose_frames(md_dir, threshold, self.plan.max_frames)
        record = {"md": str(md_dir), "threshold": threshold, "frames_above": above, "timesteps": chosen,
                  "deviations": [deviation[s] for s in chosen], "segment": None}  # fmt: skip
        if chosen:
            segment = label_frames(self.system, self.forcefield, md_dir / "trajectory.lammpstrj", chosen, labels_dir)
            record["segment"] = segment
        atomic_write_text(done, json.dumps(record, indent=2) + "\n")
        return record

    def write_dataset(self, folder: Path, added: list[dict]) -> Path:
        """The dataset of a round: the original segments (absolute paths) and every labelled one so far."""
        data = folder / "data"
        if (data / "manifest.json").exists():
            return data
        manifest = json.loads(json.dumps(self.base))
        for segment in manifest["segments"]:
            for key in ("data_file", "dump_file", "energy_file", "log_file"):
                if key in segment:
                    segment[key] = str(self.data / segment[key])
        for record in added:
            segment = {k: record["segment"][k] for k in ("data_file", "dump_file", "energy_file")}
            md = json.loads((Path(record["md"]) / "summary.json").read_text())
            segment.update(origin=ADDED_ORIGIN, round=record["round"], source_md=record["md"],
                           temperature=md["temperature"], frames=len(record["timesteps"]))  # fmt: skip
            manifest["segments"].append(segment)
        manifest["active_learning"] = {"base": str(self.data), "labelled_by": self.forcefield,
                                       "added_frames": sum(len(r["timesteps"]) for r in added)}  # fmt: skip
        atomic_write_text(data / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        return data

    def finetune_steps(self, folder: Path, members: list, data: Path, round_index: int) -> list[Step]:
        plan, steps = self.plan, []
        for k, member in enumerate(members):
            argv = ["finetune", "--from", str(member), "--data", str(data), "--name", f"member_{k}"]
            argv += ["--runs-dir", str(folder / "models"), "--epochs", str(plan.epochs), "--lr", str(plan.lr)]
            argv += ["--electrostatics", self.electrostatics, "--seed", str(plan.seed + 100 * round_index + k)]
            argv += ["--batch-size", "1", "--patience", str(plan.epochs), "--checkpoint-every", "1"]
            argv += ["--threads", "1", "--no-progress"]
            if plan.max_minutes is not None:
                argv += ["--max-minutes", str(plan.max_minutes)]
            run_dir = folder / "models" / f"member_{k}"
            if any(run_dir.glob("checkpoints/epoch_*.pt")):
                argv.append("--resume")  # killed part-way: go on
            elif run_dir.exists():
                argv.append("--overwrite")  # killed before its first checkpoint: start again
            steps.append(Step(f"{folder.name}-finetune-{k}", argv, folder / "models" / f"member_{k}" / "summary.json"))
        return steps


def choose_frames(md_dir: Path, threshold: float, max_frames: int) -> tuple[list[int], int, dict]:
    """(chosen timesteps, how many dumped frames passed the threshold, max deviation per step) of a
    committee MD run: the dumped frames whose largest force deviation is above `threshold`, at most
    `max_frames` of them spread evenly over the run."""
    table = np.loadtxt(md_dir / "deviation.txt", ndmin=2)
    deviation = {int(step): float(high) for step, high, _ in table}
    dumped = dump_timesteps(md_dir / "trajectory.lammpstrj")
    above = [step for step in dumped if deviation.get(step, 0.0) > threshold]
    chosen = above
    if len(above) > max_frames:
        picks = np.unique(np.round(np.linspace(0, len(above) - 1, max_frames)).astype(int))
        chosen = [above[i] for i in picks]
    return chosen, len(above), deviation


def _md_row(md_dir: Path, selection: dict | None) -> dict:
    summary = json.loads((md_dir / "summary.json").read_text())
    committee = summary.get("committee") or {}
    row = {
        "temperature": summary["temperature"],
        "blown_up": summary["blown_up"],
        "failed_at_step": summary["failed_at_step"],
        "runaway": summary.get("runaway"),
        "mean_temperature": summary["mean_temperature"],
        "max_force_deviation": committee.get("max_force_deviation"),
        "mean_max_force_deviation": committee.get("mean_max_force_deviation"),
    }
    if selection is not None:
        row.update(frames_above=selection["frames_above"], frames_added=len(selection["timesteps"]))
    return row


def _member_rows(folder: Path, count: int) -> list[dict]:
    rows = []
    for k in range(count):
        summary = json.loads((folder / "models" / f"member_{k}" / "summary.json").read_text())
        rows.append({"model": str(folder / "models" / f"member_{k}" / "best.pt"),
                     "best_val_force_mae": summary["best_val_force_mae"]})  # fmt: skip
    return rows


def run_active_learning(plan: LearnPlan, out, progress: bool = True) -> dict:
    """All rounds and the final check (see the module's doc); returns report.json's content."""
    learning = ActiveLearning(plan, out, progress)
    with FolderLock(learning.out):
        learning.start()
        threshold = learning.threshold()
        members, added, rounds = [Path(m) for m in plan.models], [], []
        for r in range(1, plan.rounds + 1):
            folder = learning.out / f"round_{r:02d}"
            report, members = _one_round(learning, folder, r, members, added, threshold)
            rounds.append(report)
            if report["frames_added"] == 0:
                break  # nothing left where the committee disagrees: done
        final = _explore(learning, learning.out / "final", members, len(rounds) + 1)
        data = next((r["dataset"] for r in reversed(rounds) if "dataset" in r), str(plan.data))
        report = {"plan": _plain(plan), "threshold": threshold, "rounds": rounds,
                  "final": {"models": [str(m) for m in members], "data": data, "state_points": final}}  # fmt: skip
        atomic_write_text(learning.out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def _explore(learning: ActiveLearning, folder: Path, members: list, round_index: int) -> list[dict]:
    steps = learning.md_steps(folder, members, round_index)
    run_steps(f"{folder.name}: MD", steps, learning.plan.jobs, learning.out / "logs", learning.progress)
    return [_md_row(step.output.parent, None) for step in steps]


def _one_round(learning: ActiveLearning, folder: Path, r: int, members: list, added: list, threshold: float):
    """One round: explore, label, assemble, fine-tune; (its report, the new members)."""
    plan = learning.plan
    done = folder / "report.json"
    if done.exists():
        report = json.loads(done.read_text())
        added.extend(report["added"])
        return report, [Path(row["model"]) for row in report["members"]] or members
    steps = learning.md_steps(folder, members, r)
    run_steps(f"round {r}: MD", steps, plan.jobs, learning.out / "logs", learning.progress)
    state_points, new = [], []
    for step in steps:
        md_dir = step.output.parent
        selection = learning.select_and_label(md_dir, folder / md_dir.name.replace("md_", "labels_"), threshold)
        state_points.append(_md_row(md_dir, selection))
        if selection["segment"] is not None:
            new.append({**selection, "round": r})
    added.extend(new)
    report = {"round": r, "committee": [str(m) for m in members], "state_points": state_points,
              "frames_added": sum(len(s["timesteps"]) for s in new), "added": new, "members": []}  # fmt: skip
    if new:
        data = learning.write_dataset(folder, added)
        run_steps(f"round {r}: fine-tune", learning.finetune_steps(folder, members, data, r), plan.jobs,
                  learning.out / "logs", learning.progress)  # fmt: skip
        report["dataset"] = str(data)
        report["members"] = _member_rows(folder, len(members))
    atomic_write_text(done, json.dumps(report, indent=2) + "\n")
    return report, [Path(row["model"]) for row in report["members"]] or members
