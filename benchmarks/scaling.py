"""Inference cost of each model family, with and without PME electrostatics, from 648 atoms to >100,000
(replicated boxes of real LAMMPS water), beside LAMMPS' own time per MD step for the same system; and
training time per 648-atom frame.

    python benchmarks/scaling.py [--data DIR] [--reps 1,2,3,4,6] [--models mpnn,eqforce,nequip]
        [--electrostatics none,pme] [--no-lammps] [--no-train] [--threads N] [--out FILE]

--reps 12 is 1,119,744 atoms (8 and 10: 331,776 and 648,000).

A step is what MD needs per timestep, one call of a checkpoint's force function (gnnmd.inference.ModelForces,
as `gnnmd md` makes it): graph from positions and cell, forward pass, forces (autograd for the energy model)
and, with PME, the Coulomb forces. Each family has the size of its shipped model in benchmarks/models/; LAMMPS gets as many OpenMP threads as torch has. Each point runs in its own process
so its peak memory (VmHWM above the resident size before the step) is its own. Writes benchmarks/results/scaling.json (rows {"model", "electrostatics", "atoms",
"seconds_per_step" (the fastest repeat: for nequip a step whose neighbour list needs no rebuild),
"first_step_seconds" (the first call: neighbour list built), "peak_mb" (over all steps, the first
included), "kb_per_atom"}; "model": "lammps" for the reference) and scaling.png."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, SHIPPED_MODELS, default_water, memory_kb, reset_peak_memory, write_results

# the size of each family that the repository ships (cost depends on channels, layers and cutoff, not on
# the weights); a family without a shipped model falls back to its defaults
SHIPPED_RUN = {"mpnn": "mpnn-water", "eqforce": "eqforce-water", "nequip": "nequip-pme-water"}


def shipped_model(family: str):
    """(model, checkpoint info) of the family's shipped model, or (a model of its defaults, None)."""
    from gnnmd.models import build_model
    from gnnmd.models.checkpoint import load_model

    checkpoint = SHIPPED_MODELS / SHIPPED_RUN.get(family, family) / "best.pt"
    if checkpoint.is_file():
        return load_model(checkpoint, family)
    return build_model(family), None


def checkpoint_for(family: str, pme: bool, frames, folder: Path) -> Path:
    """A checkpoint of the family at its shipped size for a row with or without PME: the shipped file
    itself where it fits, else one written to `folder` (the shipped weights, or a model of the family's
    defaults, with the PME settings `gnnmd train --electrostatics pme` stores for this water)."""
    from gnnmd.models.checkpoint import save_checkpoint
    from gnnmd.models.electrostatics import Electrostatics

    model, info = shipped_model(family)
    if info is not None and (info.electrostatics or not pme):
        return Path(info.path)
    settings = Electrostatics.for_system(frames.topology, frames.mean_cell()).config() if pme else None
    type_table = info.type_table if info else frames.topology.type_table()
    normalisation = info.normalisation if info else {}
    return save_checkpoint(
        folder / f"{family}.pt", model, type_table=type_table, normalisation=normalisation, electrostatics=settings
    )


def step_function(family: str, electrostatics: str, data: Path, reps: int, folder: Path):
    """A closure doing one MD step's force evaluation (gnnmd's force function of a checkpoint, as `gnnmd md`
    calls it: graph from positions and cell, forward, forces and, with PME, the Coulomb forces), and the
    atom count."""
    from gnnmd.data import load_frames, replicate
    from gnnmd.inference import ModelForces

    frames = load_frames(data)
    topology, positions, cell = replicate(
        frames.topology, frames.positions[0], frames.cells[0].astype(np.float64), (reps,) * 3
    )
    pme = electrostatics == "pme"
    forces_of = ModelForces(checkpoint_for(family, pme, frames, folder), topology, electrostatics=pme)
    # PME set-up for this cell now (the force function would do it on its first call), so that a step's
    # peak memory is the step's own
    forces_of.prepare(cell)

    def step():
        return forces_of(positions, cell)

    return step, topology.n_atoms


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def lammps_function(data: Path, reps: int):
    """LAMMPS running SPC/Fw (lj/cut/coul/long + pppm 1e-5) on the same replicated system: one step."""
    from gnnmd.lammps.engine import load_system_commands, start_lammps

    lmp = start_lammps(threads=torch_threads())
    segment = data / "segment_000"
    lmp.commands_list(
        load_system_commands(segment / "system.data", "spcfw.ff")
        + [f"replicate {reps} {reps} {reps}", "fix integrate all nve", "timestep 1.0", "thermo 1000", "run 1"]
    )

    def step():
        lmp.command("run 1 pre no post no")

    return step, int(lmp.get_natoms())


def train_function(family: str, data: Path):
    """One optimiser step on one 648-atom frame (forces L1), as in training."""
    import torch

    from gnnmd.data import FrameDataset, load_frames

    frames = load_frames(data)
    model = shipped_model(family)[0].train()
    graph = FrameDataset(frames, model.cutoff)[0]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss = (model(graph)["forces"] - graph.y).abs().mean()
        loss.backward()
        optimizer.step()

    return step, frames.topology.n_atoms


def measure(kind: str, family: str, electrostatics: str, data: Path, reps: int, repeats: int, folder: Path) -> dict:
    """One point, in this process; `folder` takes the checkpoint a row may need written."""
    from gnnmd.memory import keep_freed_memory

    keep_freed_memory()  # as `gnnmd md` and every gnnmd command run
    if kind == "lammps":
        step, atoms = lammps_function(data, reps)
    elif kind == "train":
        step, atoms = train_function(family, data)
    else:
        step, atoms = step_function(family, electrostatics, data, reps, folder)
    # peak memory of a step: above the resident size before the first one (later steps reuse what the
    # first mapped, as gnnmd keeps freed memory: gnnmd/memory.py)
    baseline = reset_peak_memory()
    start = time.perf_counter()
    step()  # warm-up: first-call allocations (and the first neighbour list)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "model": "lammps" if kind == "lammps" else family,
        "electrostatics": "pppm" if kind == "lammps" else electrostatics,
        "atoms": atoms,
        "seconds_per_step": float(np.min(times)),
        "first_step_seconds": first,
        "peak_mb": round((memory_kb("VmHWM") - baseline) / 1024, 1),
        "kb_per_atom": round((memory_kb("VmHWM") - baseline) / atoms, 2),
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    series = sorted({(r["model"], r["electrostatics"]) for r in rows})
    for model, elec in series:
        points = sorted(
            (r["atoms"], r["seconds_per_step"], r["peak_mb"])
            for r in rows
            if (r["model"], r["electrostatics"]) == (model, elec)
        )
        atoms, seconds, peak = map(np.array, zip(*points))
        style = "k-o" if model == "lammps" else "-o"
        left.loglog(atoms, seconds / atoms * 1e6, style, label=f"{model} ({elec})", ms=3)
        right.loglog(atoms, np.maximum(peak, 0.1), style, label=f"{model} ({elec})", ms=3)
    left.set(xlabel="atoms", ylabel="time per atom per step (µs)", title="cost per atom (flat = linear)")
    right.set(xlabel="atoms", ylabel="peak memory of a step (MB)", title="memory")
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a water dataset (default: generate one 648-atom frame)")
    parser.add_argument("--models", default="mpnn,eqforce,nequip")
    parser.add_argument("--reps", default="1,2,3,4,6", help="n of the n x n x n replicas (6: 139,968 atoms)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--electrostatics", default="none,pme", help="none, pme, none,pme or both (= none,pme)")
    parser.add_argument("--no-lammps", action="store_true", help="skip LAMMPS' own steps")
    parser.add_argument("--no-train", action="store_true", help="skip the training step")
    parser.add_argument("--threads", type=int, help="torch (and LAMMPS) threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "MODEL", "ELECTROSTATICS", "REPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        kind, family, elec, reps = args.child
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(measure(kind, family, elec, args.data, int(reps), args.repeats, Path(folder))))
        return

    def child(kind, family, elec, reps):
        command = [
            sys.executable,
            __file__,
            "--child",
            kind,
            family,
            elec,
            str(reps),
            "--data",
            str(data),
            "--repeats",
            str(args.repeats),
            *(["--threads", str(args.threads)] if args.threads else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:  # e.g. killed for memory (-9): a result too, and the others still run
            reason = f"exit {done.returncode}: {done.stderr[-500:].strip() or 'killed (out of memory?)'}"
            print(f"{kind:>6} {family:>8} {elec:>5} x{reps}: failed, {reason}", flush=True)
            return {"model": family, "electrostatics": elec, "replicas": reps, "failed": reason}
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{kind:>6} {row['model']:>8} {row['electrostatics']:>5} {row['atoms']:>7} atoms "
            f"{row['seconds_per_step']:9.3f} s  {row['seconds_per_step'] / row['atoms'] * 1e6:8.2f} us/atom "
            f"{row['peak_mb']:9.1f} MB",
            flush=True,
        )
        return row

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or default_water(Path(tmp))
        rows, training = [], []
        sizes = [int(n) for n in args.reps.split(",")]
        for reps in sizes if not args.no_lammps else ():
            rows.append(child("lammps", "-", "-", reps))
        for family in args.models.split(","):
            if not args.no_train:
                training.append(child("train", family, "none", 1))
            for elec in ("none", "pme") if args.electrostatics == "both" else args.electrostatics.split(","):
                for reps in sizes:
                    rows.append(child("infer", family, elec, reps))
    measured = [r for r in rows if "failed" not in r]
    lammps = {r["atoms"]: r["seconds_per_step"] for r in measured if r["model"] == "lammps"}
    for row in measured:
        if row["atoms"] in lammps:
            row["ratio_to_lammps"] = row["seconds_per_step"] / lammps[row["atoms"]]
    flatness = {}
    for model, elec in sorted({(r["model"], r["electrostatics"]) for r in measured}):
        per_atom = {
            r["atoms"]: r["seconds_per_step"] / r["atoms"]
            for r in measured
            if (r["model"], r["electrostatics"]) == (model, elec)
        }
        near_5k, largest = min(per_atom, key=lambda a: abs(a - 5000)), max(per_atom)
        flatness[f"{model}/{elec}"] = per_atom[largest] / per_atom[near_5k]
    write_results(
        args.out,
        "scaling",
        rows,
        per_atom_time_ratio_largest_vs_5k=flatness,
        training_seconds_per_frame=[
            {"model": t["model"], "atoms": t["atoms"], "seconds_per_frame": t["seconds_per_step"]} for t in training
        ],
    )
    plot(measured, args.out.with_suffix(".png"))
    print(json.dumps(flatness, indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
