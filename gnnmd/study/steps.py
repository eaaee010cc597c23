"""Steps of a study: gnnmd commands run as subprocesses, each done when its output exists, so a killed
study continues where it stopped. Shared by `gnnmd reproduce` and `gnnmd learn`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gnnmd.progress import hidden

# the gnnmd option of a field where it is not --field-name
OPTION_NAMES = {"warmup_epochs": "--warmup", "init_from": "--from"}


def command_options(options: dict) -> list[str]:
    """`gnnmd` command-line options from option values (TrainConfig fields, `gnnmd generate` options):
    the one direction the study goes, objects to a command line, never back."""
    argv: list[str] = []
    for name, value in options.items():
        flag = OPTION_NAMES.get(name, "--" + name.replace("_", "-"))
        if name == "hyper":
            for key, item in value.items():
                argv += ["--hyper", f"{key}={json.dumps(item)}"]
        elif isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(str(v) for v in value)] if name == "freeze" else [flag, *map(str, value)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


@dataclass
class Step:
    """One gnnmd command; done when `output` exists (and it exited with a code in `accept`: `gnnmd md`'s
    1 for a blown-up run is a result)."""

    name: str
    argv: list[str]
    output: Path
    accept: tuple = (0,)


def run_steps(label: str, steps: list[Step], jobs: int, logs: Path, progress: bool = True) -> None:
    """Run the steps whose output is missing, up to `jobs` side by side (one torch thread each when
    several), each as `python -m gnnmd.cli ARGV` with its output appended to logs/NAME.log; raise naming
    the steps that failed."""
    todo = [step for step in steps if not step.output.exists()]
    logs.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(steps), initial=len(steps) - len(todo), desc=label, unit="step", disable=hidden(progress))
    failed = []

    def run(step: Step) -> None:
        log = logs / f"{step.name}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1" if jobs > 1 else os.environ.get("OMP_NUM_THREADS", ""))
        with open(log, "a") as handle:
            handle.write(f"\n$ gnnmd {' '.join(step.argv)}\n")
            handle.flush()
            code = subprocess.call([sys.executable, "-m", "gnnmd.cli", *step.argv], stdout=handle,
                                   stderr=subprocess.STDOUT, env={k: v for k, v in env.items() if v != ""})  # fmt: skip
        if code not in step.accept or not step.output.exists():
            failed.append(f"{step.name} (exit {code}; log {log})")
        bar.update()

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(run, todo))
    bar.close()
    if failed:
        raise RuntimeError(f"{len(failed)} step(s) failed: " + "; ".join(failed))
