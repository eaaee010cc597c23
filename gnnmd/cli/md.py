"""`gnnmd md` (MD in LAMMPS with a model's forces) and `gnnmd rdf` (structure against a reference)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gnnmd.cli.common import add_device


def add_md(sub) -> None:
    p = sub.add_parser(
        "md",
        help="run LAMMPS MD with a trained model's forces (or a LAMMPS force-field file's)",
        description="LAMMPS integrates (nve, nvt or npt), on one MPI rank or several (mpiexec -n K gnnmd md ...); the model supplies forces and energy every step through "
        "fix external, or --forcefield gives LAMMPS a force field of its own (a CG fit's cg.ff). "
        "Writes trajectory.lammpstrj, log.lammps, thermo.txt and summary.json into --out.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model", type=Path, nargs="+", help="checkpoint (.pt); several: a committee, as with --committee"
    )
    which.add_argument(
        "--committee",
        dest="model",
        type=Path,
        nargs="+",
        help="two or more checkpoints trained alike (e.g. other seeds): their mean force drives MD and "
        "deviation.txt logs, per step, the largest force deviation among the atoms (where they disagree)",
    )
    which.add_argument(
        "--forcefield",
        type=Path,
        metavar="FILE",
        help="no model: plain LAMMPS MD with this force-field include (pair/bond/angle styles and coefficients, "
        "special_bonds), e.g. a `gnnmd coarse-grain fit`'s cg.ff with its cg.data as --system",
    )
    p.add_argument(
        "--system",
        type=Path,
        required=True,
        help="LAMMPS data file of the system (e.g. segment_000/system.data)",
    )
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--ensemble", choices=("nve", "nvt", "npt"), default="nve")
    p.add_argument("--pressure", type=float, default=1.0, help="atm, the npt target (isotropic)")
    p.add_argument(
        "--temperature",
        type=float,
        help="K: new velocities (and the nvt target); default keeps the data file's",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dump-every", type=int, default=10)
    _add_model_options(p)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_md_command)


# the options that only a model run takes, and their defaults (argparse's are None, to tell them given)
MODEL_OPTIONS = {
    "allow_unknown_types": False,
    "coulomb": "lammps",
    "device": "auto",
    "precision": "float32",
    "lj_tail": None,
}


def _add_model_options(p) -> None:
    """How the model meets the system: unknown types, who computes Coulomb, device, precision, LJ tail."""
    p.add_argument(
        "--allow-unknown-types",
        action="store_true",
        help="run even if the system has atom types the model was not trained on (zero-shot transfer)",
    )
    p.add_argument(
        "--coulomb",
        choices=("lammps", "torch-pme"),
        help="for a model trained with PME (it learned reference minus Coulomb): LAMMPS computes the "
        "Coulomb part (coul/long + pppm with the checkpoint's cutoff, accuracy and special_bonds; default) "
        "or torch-pme adds it to the model's forces, as in training and evaluation",
    )
    add_device(p)
    p.add_argument(
        "--precision",
        choices=("float32", "float64"),
        help="the model's arithmetic: float32 (fast; default) or float64 (forces the same to ~1e-10 on any number of MPI ranks)",
    )
    p.add_argument(
        "--lj-tail",
        type=float,
        metavar="R",
        help="add the mean-field Lennard-Jones energy and pressure of pairs between the model's cutoff and R "
        "(A: the reference force field's LJ cutoff, 10 for SPC/Fw), which a short cutoff cannot see; for NPT",
    )
    p.set_defaults(**dict.fromkeys(MODEL_OPTIONS))  # None: not given; MODEL_OPTIONS has the model run's defaults


def run_md_command(args) -> int:
    from gnnmd.lammps.md_settings import MDSettings
    from gnnmd.lammps.ranks import mpi_rank

    given = [name for name in MODEL_OPTIONS if getattr(args, name) is not None]
    if args.forcefield is not None and given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"--forcefield runs plain LAMMPS, no model; {options} only go with --model or --committee")
    settings = MDSettings(
        steps=args.steps,
        timestep=args.timestep,
        ensemble=args.ensemble,
        temperature=args.temperature,
        seed=args.seed,
        dump_every=args.dump_every,
        pressure=args.pressure,
    )
    summary = _forcefield_run(args, settings) if args.forcefield is not None else _model_run(args, settings)
    if mpi_rank() != 0:  # under mpiexec every rank has the summary; the first speaks
        return 1 if summary["blown_up"] else 0
    return _report(args.out, summary)


def _model_run(args, settings) -> dict:
    from gnnmd.lammps.md_model import run_md

    options = {
        name: MODEL_OPTIONS[name] if getattr(args, name) is None else getattr(args, name) for name in MODEL_OPTIONS
    }
    return run_md(
        args.model if len(args.model) > 1 else args.model[0],
        args.system,
        settings,
        args.out,
        **options,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )


def _forcefield_run(args, settings) -> dict:
    """Plain LAMMPS with the file's force field (a CG fit's cg.ff): the model run's settings and outputs."""
    from gnnmd.data.forcefield import ForceField
    from gnnmd.lammps.md_reference import run_lammps_md

    return run_lammps_md(args.system, ForceField.read(args.forcefield), settings, args.out, overwrite=args.overwrite)


def _report(out: Path, summary: dict) -> int:
    """The first rank's words on a run: a failure (exit 1), or one line of numbers and the warnings."""
    if summary["blown_up"]:
        when = (
            "with non-finite numbers" if summary["failed_at_step"] is None else f"at step {summary['failed_at_step']}"
        )
        print(
            f"gnnmd md: the run blew up {when} ({summary['failure']}); "
            f"{out}/summary.json and the trajectory up to there are kept",
            file=sys.stderr,
        )
        return 1
    drift = summary["energy_drift_per_atom_per_ps"]
    print(
        f"{out}: {summary['steps']} steps of {summary['atoms']} atoms, {summary['steps_per_second']:.1f} steps/s, "
        f"mean T {summary['mean_temperature']:.1f} K, energy drift "
        + ("n/a (direct-force model)" if drift is None else f"{drift:.3g} kcal/mol/atom/ps")
        + (f", Coulomb: {summary['electrostatics']}" if summary.get("electrostatics") else "")
        + (f", walls acted in {summary['wall_contacts']} steps" if summary.get("wall_contacts") else "")
        + (
            f", committee force deviation max {summary['committee']['max_force_deviation']:.3g} kcal/mol/A"
            if summary.get("committee")
            else ""
        )
    )
    for warning in summary["warnings"]:
        print(f"gnnmd md: WARNING: {warning}", file=sys.stderr)
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
    p.add_argument(
        "--allow-blown-up",
        action="store_true",
        help="use a dump whose `gnnmd md` run blew up (its summary.json says so): the frames before the failure",
    )
    p.set_defaults(func=run_rdf)


def run_rdf(args) -> int:
    from gnnmd.analysis.rdf import compare_rdfs, compute_rdfs, default_r_max, frames_before_failure, plot_rdfs

    stops = {}
    for dump in (args.reference, args.trajectory):
        stops[dump], note = frames_before_failure(dump, args.allow_blown_up)
        if note:
            print(f"gnnmd rdf: {note}", file=sys.stderr)
        if stops[dump] is not None and args.skip >= stops[dump]:
            raise ValueError(f"{dump}: --skip {args.skip} leaves none of its {stops[dump]} frames before the failure")
    r_max = args.r_max or min(default_r_max(args.data, dump) for dump in (args.reference, args.trajectory))
    reference = compute_rdfs(args.data, args.reference, r_max=r_max, skip=args.skip, stop=stops[args.reference])
    trajectory = compute_rdfs(args.data, args.trajectory, r_max=r_max, skip=args.skip, stop=stops[args.trajectory])
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
