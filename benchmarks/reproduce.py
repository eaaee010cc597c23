"""The reference study end to end (same as `gnnmd reproduce`; see gnnmd/study/reproduction.py).

    python benchmarks/reproduce.py [--scale quick|default|full] [--work reproduce]

Results go to benchmarks/results/ (reproduction.json, reproduction.md, figures/) and the table into
docs/reproduction.md's table block, unless --results / --update-doc say otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

from gnnmd.cli import main

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--results" not in argv:
        argv += ["--results", str(ROOT / "benchmarks" / "results")]
    if "--update-doc" not in argv:
        argv += ["--update-doc", str(ROOT / "docs" / "reproduction.md")]
    sys.exit(main(["reproduce", *argv]))
