"""Zero-shot transfer (issue: zero-shot transfer by corresponding states): a water-trained model's force
errors on its own validation frames and on argon, which it never saw, into
benchmarks/results/zero_shot.json. (The unseen Lennard-Jones liquids are tests/test_zero_shot.py.)

    python benchmarks/zero_shot.py --water DATA --argon DATA [--models CKPT ...]"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, SHIPPED_MODELS, evaluation, write_results

MODELS = [SHIPPED_MODELS / "csnequip-pme-water" / "best.pt", SHIPPED_MODELS / "nequip-pme-water" / "best.pt"]


def evaluate(model: Path, data: Path, split: str) -> dict:
    command, result = evaluation(["--model", str(model), "--data", str(data), "--split", split])
    return {"command": command, "family": result["family"], "force_mae": result["force_mae"],
            "mean_abs_force": result["mean_abs_force"], "relative_force_mae": result["relative_force_mae"],
            "frames": result["frames"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--water", type=Path, required=True, help="the water dataset the models were trained on")
    parser.add_argument("--argon", type=Path, required=True)
    parser.add_argument("--models", type=Path, nargs="+", default=MODELS)
    args = parser.parse_args()
    rows = []
    for model in args.models:
        rows.append({"what": "water validation", **evaluate(model, args.water, "val")})
        rows.append({"what": "argon zero-shot (trained on water only)", **evaluate(model, args.argon, "all")})
    write_results(RESULTS / "zero_shot.json", "zero_shot", rows, threads=1)


if __name__ == "__main__":
    main()
