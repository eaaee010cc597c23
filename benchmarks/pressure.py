"""The model's pressure on reference frames against LAMMPS' own (issue: MD across ranks and NPT): `gnnmd
evaluate --stress` of a water model on its validation frames, without and with the mean-field
Lennard-Jones beyond its cutoff (--lj-tail), into benchmarks/results/pressure.json.

    python benchmarks/pressure.py --data DATA [--model CKPT] [--lj-tail 10] [--split val]"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, SHIPPED_MODELS, evaluation, write_results


def evaluate(model: Path, data: Path, split: str, lj_tail: float | None) -> dict:
    args = ["--model", str(model), "--data", str(data), "--split", split, "--stress"]
    command, result = evaluation(args + ([] if lj_tail is None else ["--lj-tail", str(lj_tail)]))
    return {"command": command, "force_mae": result["force_mae"], **result["stress"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODELS / "nequip-pme-water" / "best.pt")
    parser.add_argument("--lj-tail", type=float, default=10.0)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    rows = [evaluate(args.model, args.data, args.split, tail) for tail in (None, args.lj_tail)]
    write_results(RESULTS / "pressure.json", "pressure", rows, threads=1)


if __name__ == "__main__":
    main()
