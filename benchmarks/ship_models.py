"""Copy the models the repository ships from a reproduction's runs into benchmarks/models/: the best water
model of each family and the argon fine-tuned energy model, each as a small run directory (best.pt,
config.json, summary.json, metrics.csv and the manifest of the dataset it was trained on), so that
`gnnmd evaluate`, `gnnmd figures --run` and `gnnmd md` work right after installing.

    python benchmarks/ship_models.py --runs reproduce/runs [--only nequip-pme-water ...]"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import SHIPPED_MODELS as MODELS

SHIPPED = {  # shipped name: run name in a reproduction
    "nequip-pme-water": "nequip-pme-water",
    "nequip-none-water": "nequip-none-water",
    "eqforce-water": "eqforce-water",
    "mpnn-water": "mpnn-water",
    "nequip-argon-finetuned": "nequip-pme-argon100",
}
FILES = ("best.pt", "config.json", "summary.json", "metrics.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="runs/ folder of a `gnnmd reproduce` work folder")
    parser.add_argument("--out", type=Path, default=MODELS)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(SHIPPED),
        help="ship these models only (e.g. the runs a reproduction still under way has finished)",
    )
    args = parser.parse_args()
    for name, run in SHIPPED.items():
        if args.only and name not in args.only:
            continue
        source, target = args.runs / run, args.out / name
        missing = [f for f in FILES if not (source / f).is_file()]
        if missing:
            raise SystemExit(f"{source}: missing {', '.join(missing)} (has the reproduction finished this run?)")
        target.mkdir(parents=True, exist_ok=True)
        for file in FILES:
            shutil.copyfile(source / file, target / file)
        data = Path(json.loads((source / "config.json").read_text())["data"])
        shutil.copyfile(data / "manifest.json", target / "dataset_manifest.json")
        print(f"{target}: from {source}")


if __name__ == "__main__":
    main()
