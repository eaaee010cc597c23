"""Inference throughput of trained checkpoints (atoms/s, forces included: graph, network, autograd for
energy models, PME when the checkpoint has it) on a 648-atom and a 4800-atom water frame, all models in
the same run so their numbers compare.

    python benchmarks/throughput.py --water DIR --big-water DIR CKPT [CKPT ...]

Writes benchmarks/results/throughput.json: rows {"model", "electrostatics", "atoms", "atoms_per_second"}."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, write_results


def atoms_per_second(checkpoint: Path, data: Path, repeats: int) -> tuple[dict, int, float]:
    from gnnmd.data import load_frames
    from gnnmd.inference import ModelForces

    frames = load_frames(data)
    forces_of = ModelForces(checkpoint, frames.topology, str(data))
    positions, cell = frames.positions[0].astype(np.float64), frames.cells[0].astype(np.float64)
    forces_of(positions, cell)  # warm-up (PME set-up, first allocations)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forces_of(positions, cell)
        times.append(time.perf_counter() - start)
    return forces_of.info, frames.topology.n_atoms, frames.topology.n_atoms / float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--water", type=Path, required=True, help="216-molecule water dataset (648 atoms)")
    parser.add_argument("--big-water", type=Path, required=True, help="1600-molecule water dataset (4800 atoms)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for checkpoint in args.checkpoints:
        for data in (args.water, args.big_water):
            info, atoms, rate = atoms_per_second(checkpoint, data, args.repeats)
            row = {
                "model": info["family"],
                "electrostatics": "pme" if info.get("electrostatics") else "none",
                "atoms": atoms,
                "atoms_per_second": rate,
                "checkpoint": str(checkpoint),
            }
            rows.append(row)
            print(
                f"{row['model']:>8} {row['electrostatics']:>5} {row['atoms']:>6} atoms {rate:10.0f} atoms/s", flush=True
            )
    write_results(args.out, "throughput", rows, torch_threads=args.threads)


if __name__ == "__main__":
    main()
