"""`gnnmd coarse-grain`: map a dataset onto CG sites, (`coarse-grain fit`) force-match a CG force field
to the mapped dataset, written as LAMMPS input, and (`coarse-grain residual`) the mapped dataset minus
that fit, for a GNN correction trained on top of it (see docs/coarse_grain.md)."""

from __future__ import annotations

from pathlib import Path


def add_coarse_grain(sub) -> None:
    p = sub.add_parser(
        "coarse-grain",
        help="map a dataset onto coarse-grained sites, or (fit) force-match a CG force field to one",
        description="gnnmd coarse-grain --data DATASET --mapping MAP.yaml --out CG_DATASET: CG frames (site "
        "positions, summed forces) and topology as a new dataset. gnnmd coarse-grain fit --data CG_DATASET "
        "--out FIT_DIR: MS-CG force matching (harmonic bonds and angles, pair splines) written as cg.ff, "
        "cg.table, cg.data and fit.json for plain LAMMPS. gnnmd coarse-grain residual --data CG_DATASET --fit "
        "FIT_DIR --out RESIDUAL: the CG dataset with the fit's forces and energies (a LAMMPS rerun) taken off, "
        "to train a GNN correction on (gnnmd train); its checkpoints keep the fit as a prior in gnnmd md.",
    )
    p.add_argument(
        "action", nargs="?", choices=("map", "fit", "residual"), default="map", help="map (default), fit or residual"
    )
    p.add_argument(
        "--data", type=Path, required=True, help="the dataset to map (map) or the CG dataset (fit, residual)"
    )
    p.add_argument("--mapping", type=Path, help="map: the mapping YAML (molecules, their sites)")
    p.add_argument("--fit", type=Path, help="residual: the fit folder (of coarse-grain fit) whose forces are the prior")
    p.add_argument("--out", type=Path, required=True, help="map, residual: the new dataset folder; fit: the fit folder")
    p.add_argument("--cutoff", type=float, default=10.0, help="fit: pair cutoff, A")
    p.add_argument("--spacing", type=float, default=0.2, help="fit: distance between pair-spline knots, A")
    p.add_argument("--ridge", type=float, default=1e-6, help="fit: ridge on the pair coefficients (relative)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if gnnmd wrote it")
    p.set_defaults(func=run_coarse_grain)


def run_coarse_grain(args) -> int:
    if args.action == "fit":
        return _fit(args)
    if args.action == "residual":
        return _residual(args)
    from gnnmd.data.coarse_grain import coarse_grain

    if args.mapping is None:
        raise ValueError("coarse-grain needs --mapping (a YAML file of molecules and their sites)")
    manifest = coarse_grain(args.data, args.mapping, args.out, overwrite=args.overwrite)
    names = ", ".join(row["name"] for row in manifest["type_table"])
    print(f"{args.out}: {manifest['frame_count']} CG frames of {manifest['atoms']} sites (types {names})")
    return 0


def _fit(args) -> int:
    import os

    from gnnmd.data.coarse_grain import load_cg_frames
    from gnnmd.data.reader import read_manifest
    from gnnmd.models.cg_fit import fit_cg, write_fit

    if args.mapping is not None or args.fit is not None:
        raise ValueError("coarse-grain fit takes a CG dataset (--data), not --mapping or --fit")
    source = read_manifest(args.data).get("source")
    if source == "coarse-grain-residual":
        raise ValueError(f"{args.data}: is a residual under a prior; fit the CG dataset it was made from")
    if source != "coarse-grain":
        raise ValueError(f"{args.data}: not a CG dataset (map one with `gnnmd coarse-grain --mapping`)")
    frames = load_cg_frames(args.data)
    fit = fit_cg(frames, cutoff=args.cutoff, spacing=args.spacing, ridge=args.ridge)
    record = write_fit(fit, frames, args.out, overwrite=args.overwrite, source={"dataset": os.path.abspath(args.data)})
    print(f"{args.out}: cg.ff, cg.table, cg.data, fit.json; RMS mapped force {record['rms_mapped_force']:.3f}, "
          f"residual {record['rms_residual_force']:.3f} kcal/mol/A ({record['relative_residual']:.1%})")  # fmt: skip
    return 0


def _residual(args) -> int:
    from gnnmd.lammps.cg_prior import residual_dataset

    if args.fit is None or args.mapping is not None:
        raise ValueError("coarse-grain residual needs --fit (a coarse-grain fit folder) and takes no --mapping")
    manifest = residual_dataset(args.data, args.fit, args.out, overwrite=args.overwrite)
    check = manifest["residual"]
    print(f"{args.out}: {manifest['frame_count']} CG frames minus the prior of {manifest['prior']['fit']}; "
          f"RMS mapped force {check['rms_mapped_force']:.3f}, residual {check['rms_residual_force']:.3f} "
          f"kcal/mol/A ({check['relative']:.1%})")  # fmt: skip
    return 0
