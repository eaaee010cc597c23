"""Is a water model's larger error on big water (1600 molecules) a size effect or a state effect? Per-frame
force MAE of one model on the 216-molecule frames (train and validation split) and on big water, against
each frame's density and mean |F component|.

    python benchmarks/size_transfer.py --model CKPT --water DIR --big-water DIR

The study's 216-molecule protocol starts from a loose 18x18x40 A box and samples while NPT still compresses
it, so its frames span ~0.78-1.03 g/cm^3, while big water is equilibrated at ~1.02: the first suspect.
Measured (shipped nequip-pme-water): the small frames' error does not grow with density (val 0.145 at
1.00-1.05 g/cm^3), but big water's frames carry larger forces (mean |F| 18.3 against 15.4-16.2), and its
error relative to them (0.94%) is the small frames' (0.92-1.03%). Writes benchmarks/results/size_transfer.json
(MAE per density bin; per-frame rows under "frames")."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import RESULTS, SHIPPED_MODELS, write_results

WATER_MASS_G_PER_MOL = 18.01528
AVOGADRO_PER_A3 = 0.602214076  # g/cm^3 = (g/mol) / (A^3 x 0.6022)


def run_frames(frames, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """The indices into `frames` of the training and the validation frames of the run with this config
    (gnnmd.data.run_split, which training uses; with --max-frames it picks a subset, found again here by
    each frame's segment and timestep)."""
    from gnnmd.data import run_split

    chosen, train, val = run_split(
        frames, config.get("max_frames"), config.get("val_fraction", 0.1), config.get("split_seed", 0)
    )
    where = {(s, t): k for k, (s, t) in enumerate(zip(frames.segments.tolist(), frames.timesteps.tolist()))}
    if len(where) != len(frames):
        raise ValueError("frames share a (segment, timestep): cannot find the run's frames among them")
    index = np.array([where[key] for key in zip(chosen.segments.tolist(), chosen.timesteps.tolist())], dtype=np.int64)
    return index[train], index[val]


def per_frame_rows(model_path: Path, data: Path, system: str) -> list[dict]:
    from gnnmd.data import load_frames
    from gnnmd.inference import evaluate_checkpoint

    frames = load_frames(data)
    result, info = evaluate_checkpoint(model_path, data, "all", progress=False)
    n_atoms = frames.topology.n_atoms
    error = np.abs(result["pred"] - result["ref"]).reshape(len(frames), n_atoms * 3)
    ref = np.abs(result["ref"]).reshape(len(frames), n_atoms * 3)
    volume = np.abs(np.linalg.det(frames.cells.astype(np.float64)))
    density = (n_atoms // 3) * WATER_MASS_G_PER_MOL / (AVOGADRO_PER_A3 * volume)
    split = np.full(len(frames), "test", dtype=object)  # frames the model never trained on
    if system == "water":
        train, val = run_frames(frames, info.config or {})
        split[train], split[val] = "train", "val"
    return [
        {
            "system": system,
            "split": str(split[k]),
            "frame": k,
            "density_g_cm3": float(density[k]),
            "force_mae": float(error[k].mean()),
            "mean_abs_force": float(ref[k].mean()),
        }
        for k in range(len(frames))
    ]


def by_density(rows: list[dict], edges: np.ndarray) -> list[dict]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        for key in sorted({(r["system"], r["split"]) for r in rows}):
            members = [r for r in rows if (r["system"], r["split"]) == key and lo <= r["density_g_cm3"] < hi]
            if members:
                out.append(
                    {
                        "system": key[0],
                        "split": key[1],
                        "density_from": round(float(lo), 3),
                        "density_to": round(float(hi), 3),
                        "frames": len(members),
                        "force_mae": float(np.mean([r["force_mae"] for r in members])),
                        "mean_abs_force": float(np.mean([r["mean_abs_force"] for r in members])),
                    }
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODELS / "nequip-pme-water" / "best.pt")
    parser.add_argument("--water", type=Path, required=True)
    parser.add_argument("--big-water", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=RESULTS / "size_transfer.json")
    args = parser.parse_args()
    rows = per_frame_rows(args.model, args.water, "water") + per_frame_rows(args.model, args.big_water, "big-water")
    bins = by_density(rows, np.array([0.75, 0.85, 0.9, 0.95, 1.0, 1.05]))
    for row in bins:
        print(
            f"{row['system']:>9} {row['split']:>5} rho {row['density_from']:.2f}-{row['density_to']:.2f}: "
            f"{row['frames']:4d} frames, force MAE {row['force_mae']:.4f}, mean |F| {row['mean_abs_force']:.2f}"
        )
    write_results(args.out, "size_transfer", bins, model=str(args.model), frames=rows)


if __name__ == "__main__":
    main()
