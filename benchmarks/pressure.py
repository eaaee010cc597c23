"""The model's pressure on reference frames against LAMMPS' own (issue: MD across ranks and NPT): `gnnmd
evaluate --stress` of a water model on its validation frames, without and with the mean-field
Lennard-Jones beyond its cutoff (--lj-tail), into benchmarks/results/pressure.json.

    python benchmarks/pressure.py --data DATA [--model CKPT] [--lj-tail 10] [--split val]

--lj-tail 0: the row without it only (csnequip, whose pair part reaches past the reference's LJ cutoff).
Rows of other models (and tails) already in pressure.json are kept."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS, SHIPPED_MODELS, evaluation, write_results


def evaluate(model: Path, data: Path, split: str, lj_tail: float | None) -> dict:
    args = ["--model", str(model), "--data", str(data), "--split", split, "--stress"]
    command, result = evaluation(args + ([] if lj_tail is None else ["--lj-tail", str(lj_tail)]))
    return {"command": command, "model": str(model), "force_mae": result["force_mae"], **result["stress"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODELS / "nequip-pme-water" / "best.pt")
    parser.add_argument("--lj-tail", type=float, default=10.0)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    tails = (None, args.lj_tail) if args.lj_tail > 0 else (None,)
    rows = [evaluate(args.model, args.data, args.split, tail) for tail in tails]
    out = RESULTS / "pressure.json"
    old = json.loads(out.read_text())["rows"] if out.exists() else []
    for row in old:  # rows from before they named their model: the one in their command
        row.setdefault("model", row["command"].split("--model ")[1].split()[0])
    mine = {(row["model"], row["lj_tail"]) for row in rows}
    write_results(out, "pressure", [r for r in old if (r["model"], r["lj_tail"]) not in mine] + rows, threads=1)


if __name__ == "__main__":
    main()
