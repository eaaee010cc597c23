"""How every benchmark writes its JSON: the rows, the command that made them and the machine."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def write_results(path: Path, benchmark: str, rows: list[dict], **extra) -> None:
    result = {
        "benchmark": benchmark,
        "command": " ".join(["python", *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine()},
        **extra,
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
