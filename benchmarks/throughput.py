"""Inference throughput of trained checkpoints (atoms/s of the force function MD calls,
gnnmd.inference.ModelForces: neighbour list, network, forces by autograd for energy models, PME when the
checkpoint has it) on water frames of several sizes, all models in the same run so their numbers compare.

    python benchmarks/throughput.py --water DIR [--big-water DIR] [--replicate 1,2] [--threads 1] CKPT ...

Each system is measured three ways (the `mode` of a row):
  md      a short NVE trajectory (velocity Verlet, 1 fs, from 300 K) driven by the model's own forces:
          the neighbour list is rebuilt when atoms have moved far enough, as in `gnnmd md`; atoms/s from
          the mean time of a force call, rebuilds included (`rebuilds` of `calls`)
  static  the same positions at every call (what this benchmark measured before the Verlet list; a
          list that never needs a rebuild)
  fresh   a graph built afresh at every call (skin 0), the cost of a call that rebuilds
and, with --exact, `exact`: the network itself (ModelForces(tabulate=False), as training and evaluation
run it) at fixed positions. Systems: the --water frame replicated n x n x n for each n of --replicate
(648, 5184, ... atoms) and the --big-water frame if given.

Writes --out (default benchmarks/results/throughput.json): rows {"model", "electrostatics", "atoms",
"mode", "atoms_per_second", "calls", "rebuilds", "checkpoint"}."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, write_results

KCAL_TO_AMU_A2_FS2 = 1.0 / 2390.0573  # LAMMPS real units: kcal/mol -> g/mol A^2/fs^2 (1 / mvv2e)
BOLTZMANN = 0.0019872067  # kcal/mol/K


def systems(args) -> list[tuple[str, object, np.ndarray, np.ndarray]]:
    """(name, topology, positions, cell) of every system measured."""
    from gnnmd.data import load_frames, replicate

    frames = load_frames(args.water)
    cell = frames.cells[0].astype(np.float64)
    out = []
    for n in (int(k) for k in args.replicate.split(",")):
        topology, positions, big_cell = replicate(
            frames.topology, frames.positions[0].astype(np.float64), cell, (n,) * 3
        )
        out.append((f"{args.water.name} x{n}^3", topology, positions.astype(np.float64), big_cell))
    if args.big_water:
        big = load_frames(args.big_water)
        out.append(
            (args.big_water.name, big.topology, big.positions[0].astype(np.float64), big.cells[0].astype(np.float64))
        )
    return out


def time_static(forces_of, positions, cell, repeats: int) -> tuple[float, int]:
    """Fastest of `repeats` calls at the same positions (after a warm-up call)."""
    forces_of(positions, cell)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forces_of(positions, cell)
        times.append(time.perf_counter() - start)
    return float(np.min(times)), repeats


def time_md(forces_of, topology, positions, cell, steps: int, timestep: float = 1.0) -> tuple[float, int]:
    """Mean time of a force call along `steps` velocity-Verlet steps driven by the forces themselves."""
    masses = np.asarray(topology.table_masses)[np.asarray(topology.types)][:, None]
    rng = np.random.default_rng(0)
    velocities = rng.normal(size=positions.shape) * np.sqrt(BOLTZMANN * 300.0 * KCAL_TO_AMU_A2_FS2 / masses)
    positions = positions.copy()
    forces, _ = forces_of(positions, cell)  # warm-up (first list, PME set-up)
    accel = 4.184e-4 / masses  # (kcal/mol/A) / (g/mol) -> A/fs^2
    total = 0.0
    for _ in range(steps):
        velocities += 0.5 * timestep * forces * accel
        positions += timestep * velocities
        start = time.perf_counter()
        forces, _ = forces_of(positions, cell)
        total += time.perf_counter() - start
        velocities += 0.5 * timestep * forces * accel
    return total / steps, steps


def measure(checkpoint: Path, system, mode: str, args) -> dict:
    from gnnmd.inference import ModelForces

    name, topology, positions, cell = system
    options = {"fresh": {"skin": 0.0}, "exact": {"tabulate": False}}.get(mode, {})
    forces_of = ModelForces(checkpoint, topology, name, **options)
    if mode == "md":
        seconds, calls = time_md(forces_of, topology, positions, cell, args.steps)
    else:
        seconds, calls = time_static(forces_of, positions, cell, args.repeats)
    verlet = getattr(forces_of, "verlet", None)
    return {
        "model": forces_of.info.family,
        "electrostatics": "pme" if forces_of.info.electrostatics else "none",
        "atoms": topology.n_atoms,
        "mode": mode,
        "atoms_per_second": topology.n_atoms / seconds,
        "calls": calls,
        "rebuilds": None if verlet is None else verlet.rebuilds - 1,  # the warm-up's first build not counted
        "checkpoint": str(checkpoint),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--water", type=Path, required=True, help="216-molecule water dataset (648 atoms)")
    parser.add_argument("--big-water", type=Path, help="a larger water dataset (e.g. 1600 molecules)")
    parser.add_argument(
        "--replicate", default="1", help="n of the n x n x n copies of the --water frame (1,2: 648, 5184)"
    )
    parser.add_argument("--modes", default="md,static,fresh", help="any of md, static, fresh, exact")
    parser.add_argument("--exact", action="store_true", help="also the network itself (mode exact)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="MD steps of the md mode")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = args.modes.split(",") + (["exact"] if args.exact else [])
    rows = []
    for checkpoint in args.checkpoints:
        for system in systems(args):
            for mode in modes:
                row = measure(checkpoint, system, mode, args)
                rows.append(row)
                print(
                    f"{row['model']:>8} {row['electrostatics']:>5} {row['atoms']:>7} atoms {mode:>6} "
                    f"{row['atoms_per_second']:10.0f} atoms/s  ({row['calls']} calls, {row['rebuilds']} rebuilds)",
                    flush=True,
                )
    write_results(args.out, "throughput", rows, torch_threads=args.threads)


if __name__ == "__main__":
    main()
