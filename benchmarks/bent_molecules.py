"""Teach a water model the bent molecules its MD finds (issue: trustworthy MD). The committee's MD at 300-400 K
finds H-O-H angles of 45-60 degrees, where the network, trained on angles down to ~78 degrees, has a basin
that SPC/Fw does not have (its energy at 60 degrees is 28 kcal/mol above 110). The frames active learning
labels hold one or two such molecules among 216, too few atoms to move an L1 force loss. This makes
copies of training frames with a fraction of the molecules bent to angles in --angles (bonds scaled by
0.9-1.15), labels them with a LAMMPS rerun of the dataset's own force field, and writes a copy of the
dataset with them added as training frames (origin "active-learning": the validation split stays the
original one, and priors are still fitted on the original frames).

    python benchmarks/bent_molecules.py --data DATA --out DIR [--frames 60] [--fraction 0.3] [--angles 35 80]
        [--extend DATASET]

--extend: the dataset whose segments DIR/data lists beside the new one (default: DATA), e.g. the data of
an active-learning round, whose frames then all train together.

Then fine-tune on DIR/data (gnnmd finetune --from MODEL --data DIR/data ...)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from gnnmd.data import load_frames
from gnnmd.data.importing import write_dump
from gnnmd.data.reader import ADDED_ORIGIN
from gnnmd.files import atomic_write_text
from gnnmd.lammps.label import label_frames, reference_force_field


def bend(positions: np.ndarray, cell: np.ndarray, angles: np.ndarray, chosen, rng, low: float, high: float):
    """Positions with the molecules of `chosen` angles (H, O, H rows of `angles`) bent to a uniform angle in
    [low, high] degrees in their own plane, each O-H bond scaled by a uniform 0.9-1.15."""
    positions = positions.copy()
    lengths = np.diag(cell)
    for h1, o, h2 in angles[chosen]:
        u, v = (positions[h] - positions[o] for h in (h1, h2))
        u, v = u - lengths * np.round(u / lengths), v - lengths * np.round(v / lengths)
        normal = np.cross(u, v)
        e1 = u / np.linalg.norm(u)
        e2 = np.cross(normal / np.linalg.norm(normal), e1)
        theta = np.radians(rng.uniform(low, high))
        r1, r2 = np.linalg.norm(u) * rng.uniform(0.9, 1.15), np.linalg.norm(v) * rng.uniform(0.9, 1.15)
        positions[h1] = positions[o] + r1 * e1
        positions[h2] = positions[o] + r2 * (np.cos(theta) * e1 + np.sin(theta) * e2)
    return positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="water dataset from gnnmd generate")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--fraction", type=float, default=0.3, help="of the molecules of a frame, bent")
    parser.add_argument("--angles", type=float, nargs=2, default=[35.0, 80.0], help="degrees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extend", type=Path, default=None, help="dataset listed beside the new frames")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    frames = load_frames(args.data)
    sub = frames.subset(np.sort(rng.choice(len(frames), args.frames, replace=False)))
    angles = np.asarray(frames.topology.angles)
    positions = np.stack([
        bend(sub.positions[k].astype(np.float64), sub.cells[k].astype(np.float64), angles,
             rng.random(len(angles)) < args.fraction, rng, *args.angles)
        for k in range(len(sub))
    ])  # fmt: skip
    sub = replace(sub, positions=positions.astype(np.float32), timesteps=np.arange(len(sub), dtype=np.int64))
    args.out.mkdir(parents=True, exist_ok=True)
    write_dump(sub, args.out / "bent.lammpstrj")
    base = json.loads((args.data / "manifest.json").read_text())
    forcefield = reference_force_field(args.data)
    segment = label_frames(args.data / base["segments"][0]["data_file"], forcefield, args.out / "bent.lammpstrj",
                           list(range(len(sub))), args.out / "labels")  # fmt: skip
    extend = args.extend or args.data
    manifest = json.loads((extend / "manifest.json").read_text())
    for old in manifest["segments"]:
        for key in ("data_file", "dump_file", "energy_file", "log_file"):
            if key in old:
                old[key] = str((extend / old[key]).resolve())
    added = {k: segment[k] for k in ("data_file", "dump_file", "energy_file")}
    added.update(origin=ADDED_ORIGIN, frames=len(sub), bent={"fraction": args.fraction, "angles": args.angles})
    manifest["segments"].append(added)
    atomic_write_text(args.out / "data" / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out / 'data'}: {len(frames)} frames and {len(sub)} with bent molecules")


if __name__ == "__main__":
    main()
