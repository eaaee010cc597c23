"""`gnnmd learn`: active learning of a committee with LAMMPS as the teacher (gnnmd.study.active_learning)."""

from __future__ import annotations

import sys
from pathlib import Path

from gnnmd.cli.common import positive_int, set_threads


def add_learn(sub) -> None:
    p = sub.add_parser(
        "learn",
        help="active learning: MD with a committee, LAMMPS labels where it disagrees, fine-tune, repeat",
        description="Each round runs MD with the committee at the temperatures given, labels the dumped frames "
        "whose force deviation passes the threshold with a LAMMPS rerun of the system's own force field, adds "
        "them to a copy of the dataset (the original is untouched; added frames are training frames) and "
        "fine-tunes every member. Resumable: run the same command again. Writes OUT/report.json.",
    )
    p.add_argument("--data", type=Path, required=True, help="the dataset the committee was trained on")
    p.add_argument(
        "--models", type=Path, nargs="+", required=True, help="the committee: two or more distinct checkpoints"
    )
    p.add_argument("--out", type=Path, required=True, help="folder of this run (created; reused to resume)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 370.0, 400.0], help="K, state points")
    p.add_argument("--steps", type=int, default=5000, help="MD steps per state point and round")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--dump-every", type=int, default=20, help="steps between frames that can be picked")
    p.add_argument("--ensemble", choices=("nvt", "nve"), default="nvt")
    p.add_argument(
        "--threshold",
        type=float,
        help="kcal/mol/A: pick frames whose largest force deviation is above it (default: the committee's "
        "largest per-frame deviation on the dataset's validation frames)",
    )
    p.add_argument("--max-frames", type=int, default=20, help="frames labelled per state point and round")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per round")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning peak learning rate")
    p.add_argument("--max-minutes", type=float, help="per member and round")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--coulomb", choices=("lammps", "torch-pme"), default="lammps", help="as in gnnmd md")
    p.add_argument("--system", type=Path, help="LAMMPS data file MD starts from (default: the dataset's first)")
    p.add_argument("--jobs", type=positive_int, default=2, help="MD runs and fine-tunes side by side (one thread each)")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_learn)


def run_learn(args) -> int:
    from gnnmd.study.active_learning import LearnPlan, run_active_learning

    set_threads(args.threads)
    plan = LearnPlan(
        data=str(Path(args.data).resolve()),
        models=tuple(str(Path(m).resolve()) for m in args.models),
        rounds=args.rounds,
        temperatures=tuple(args.temperatures),
        steps=args.steps,
        timestep=args.timestep,
        dump_every=args.dump_every,
        ensemble=args.ensemble,
        threshold=args.threshold,
        max_frames=args.max_frames,
        epochs=args.epochs,
        lr=args.lr,
        max_minutes=args.max_minutes,
        seed=args.seed,
        coulomb=args.coulomb,
        system=str(Path(args.system).resolve()) if args.system else None,
        jobs=args.jobs,
    )
    report = run_active_learning(plan, args.out, progress=not args.no_progress)
    print(f"threshold {report['threshold']:.3g} kcal/mol/A")
    print(f"{'round':>5} {'T (K)':>6} {'mean T':>7} {'max dev':>8} {'above':>6} {'added':>6}  stability")
    for block in report["rounds"]:
        for row in block["state_points"]:
            print(_row(block["round"], row))
    for row in report["final"]["state_points"]:
        print(_row("final", row))
    if report["rounds"] and report["rounds"][-1]["members"]:
        maes = ", ".join(f"{m['best_val_force_mae']:.3f}" for m in report["rounds"][-1]["members"])
        print(f"validation force MAE of the final members: {maes} kcal/mol/A")
    print(f"wrote {args.out / 'report.json'}", file=sys.stderr)
    return 0


def _row(label, row: dict) -> str:
    stability = "blew up at step {}".format(row["failed_at_step"]) if row["blown_up"] else "ok"
    if row.get("runaway"):
        stability += f", ran away ({row['runaway']['quantity']}) from step {row['runaway']['began_at_step']}"
    dev = row["max_force_deviation"]
    return (
        f"{label!s:>5} {row['temperature']:6.0f} {row['mean_temperature'] or float('nan'):7.1f} "
        f"{float('nan') if dev is None else dev:8.3g} {row.get('frames_above', '-')!s:>6} "
        f"{row.get('frames_added', '-')!s:>6}  {stability}"
    )
