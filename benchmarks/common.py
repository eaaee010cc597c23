"""What the benchmark scripts share: where results go, how they are written (the rows, the command that made
them and the machine), a process's memory readings, and the default water frame. The scripts run as
`python benchmarks/X.py`, so this folder is on sys.path and they import it as `common`."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from gnnmd.files import atomic_write_text

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
SHIPPED_MODELS = BENCHMARKS / "models"


def write_results(path: Path, benchmark: str, rows: list[dict], **extra) -> None:
    result = {
        "benchmark": benchmark,
        "command": " ".join(["python", *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine()},
        **extra,
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def evaluation(args: list[str]) -> tuple[str, dict]:
    """Run `gnnmd evaluate ARGS` (no --out: a temporary file) and return (its command line, its JSON)."""
    import tempfile

    from gnnmd.cli import main as gnnmd

    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "eval.json"
        if gnnmd(["evaluate", *args, "--no-progress", "--out", str(out)]) != 0:
            raise SystemExit(f"gnnmd evaluate {' '.join(args)} failed")
        return "gnnmd evaluate " + " ".join(args), json.loads(out.read_text())


def memory_kb(field: str) -> int:
    """A field of /proc/self/status in kB: VmRSS (resident now), VmHWM (peak resident)."""
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_memory() -> int:
    """Reset VmHWM to the current resident size and return that size (kB): the baseline of a peak."""
    baseline = memory_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return baseline


def default_water(workdir: Path) -> Path:
    """One equilibrated frame of 216 SPC/Fw molecules (648 atoms), made with LAMMPS."""
    from gnnmd.lammps.generate import generate, protocol_for

    out = workdir / "water216"
    generate(protocol_for("water", segments=1, frames=1, equil_steps=2000), out, progress=False)
    return out
