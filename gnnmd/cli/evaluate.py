"""`gnnmd evaluate`: force errors of a checkpoint on a dataset."""

from __future__ import annotations

import json
from pathlib import Path

from gnnmd import __version__
from gnnmd.cli.common import add_device, set_threads

MARKER = "gnnmd_evaluate"  # in every JSON gnnmd evaluate writes (its version): --overwrite replaces only those
OLD_KEYS = {"force_mae", "relative_force_mae", "atoms_per_frame", "type_labels"}  # of one before the marker


def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="force errors of a checkpoint on a dataset",
        description="Force MAE/RMSE overall, per component and per type, relative to the mean |F|, and throughput; "
        "prints a table, writes JSON and a parity plot PNG.",
    )
    p.add_argument(
        "--model",
        type=Path,
        nargs="+",
        required=True,
        help="checkpoint (best.pt or checkpoints/epoch_*.pt); several: a committee (their mean force is "
        "evaluated, and how well their force deviation predicts its error)",
    )
    p.add_argument(
        "--deviation-threshold",
        type=float,
        help="committee: kcal/mol/A splitting atoms (frames) into above and below (default: the 90th percentile)",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset directory made by `gnnmd generate`")
    p.add_argument(
        "--allow-unknown-types",
        action="store_true",
        help="evaluate even if the data has atom types the model was not trained on (zero-shot transfer), as gnnmd md",
    )
    p.add_argument(
        "--split",
        choices=("all", "val", "train"),
        default="all",
        help="val/train: the split of the checkpoint's own run",
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument(
        "--out",
        type=Path,
        help="JSON file, in an existing folder (default: in the current folder, eval-<run>__<data>-<split>.json)",
    )
    p.add_argument("--plot", type=Path, help="parity plot PNG (default: the JSON path with .png)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out and --plot if they are an earlier gnnmd evaluation's"
    )
    p.add_argument(
        "--stress",
        action="store_true",
        help="energy models: also the virial (pressure) against a LAMMPS rerun of the frames with the dataset's "
        "reference force field (a generated dataset's, or an import's --log/--forcefield)",
    )
    p.add_argument(
        "--lj-tail",
        type=float,
        metavar="R",
        help="with --stress: add the mean-field Lennard-Jones between the model's cutoff and R A (as gnnmd md --lj-tail)",
    )
    p.add_argument("--threads", type=int)
    add_device(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from gnnmd.analysis.parity import parity_plot
    from gnnmd.inference.evaluate import evaluate_checkpoint, format_table, save_evaluation

    set_threads(args.threads)
    out, plot = output_paths(args)  # checked before the evaluation runs
    if args.stress:  # its reference is a rerun with the dataset's force field: one it must name
        from gnnmd.lammps.label import reference_force_field

        reference_force_field(args.data)
    first = args.model[0]
    if len(args.model) > 1:
        from gnnmd.inference.committee import evaluate_committee

        result, info = evaluate_committee(args.model, args.data, args.split, args.batch_size, not args.no_progress,
                                          args.device, args.deviation_threshold, args.allow_unknown_types)  # fmt: skip
    else:
        result, info = evaluate_checkpoint(
            first, args.data, args.split, args.batch_size, not args.no_progress, args.device, args.allow_unknown_types
        )
    members = f"committee of {len(args.model)}, " if len(args.model) > 1 else ""
    title = f"{info.family} ({members}{first.name}) on {Path(args.data).name} [{args.split}]"
    parity_plot(result.pop("pred"), result.pop("ref"), result.pop("atom_type"), result["type_labels"], plot, title)
    result["plot"] = str(plot)
    result[MARKER] = __version__
    save_evaluation(result, out)
    print(format_table(result, title))
    if args.stress:
        result["stress"] = _stress(first, args.data, args.split, info, args.lj_tail, args.allow_unknown_types)
        stress = result["stress"]
        print(f"virial MAE {stress['virial_mae_per_atom']:.4f} kcal/mol per atom; pressure (virial part) MAE "
              f"{stress['pressure_mae_atm']:.0f} atm (mean |P| component {stress['mean_abs_pressure_atm']:.0f} atm), "
              f"bias {stress['pressure_bias_atm']:+.0f} atm")  # fmt: skip
        save_evaluation(result, out)
    if "committee" in result:
        from gnnmd.inference.committee import format_committee

        print(format_committee(result["committee"]))
    print(f"wrote {out} and {plot}")
    return 0


def default_name(models: list[Path], data: Path, split: str) -> str:
    """eval-<run>__<data>-<split>.json (committee-... for several models): <run> is the first model's run
    folder, with the checkpoint's name unless it is best.pt."""
    first = Path(models[0]).resolve()
    run = first.parent.parent if first.parent.name == "checkpoints" else first.parent
    label = run.name if first.stem == "best" else f"{run.name}-{first.stem}"
    kind = "committee" if len(models) > 1 else "eval"
    return f"{kind}-{label}__{Path(data).resolve().name}-{split}.json"


def output_paths(args) -> tuple[Path, Path]:
    """(JSON, PNG) the evaluation writes: by default in the current folder, never beside the model (a
    shipped model's or another run's folder stays as it is); each checked by `check_output`."""
    out = args.out or Path(default_name(args.model, args.data, args.split))
    plot = args.plot or out.with_suffix(".png")
    check_output(out, "--out", ".json", args.overwrite, is_evaluation, args.data)
    check_output(plot, "--plot", ".png", args.overwrite, is_parity_plot, args.data)
    return out, plot


def check_output(path: Path, option: str, suffix: str, overwrite: bool, ours, data: Path) -> None:
    """`path` may be written: it ends in `suffix`, its folder exists and is not the dataset's, and it is
    new, or (with `overwrite`) a file an earlier gnnmd evaluate wrote (`ours(path)`); never an input."""
    if path.suffix.lower() != suffix:
        raise ValueError(f"{path}: {option} must end in {suffix}")
    where = Path(path).resolve()
    if not where.parent.is_dir():
        raise ValueError(f"{path}: {option}'s folder {where.parent} does not exist; make it first")
    if Path(data).resolve() in where.parents:
        raise ValueError(f"{path}: {option} is inside the dataset {data}, which gnnmd evaluate only reads")
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{path}: exists; pass --overwrite to replace an earlier gnnmd evaluation's file")
    if path.is_symlink() or not path.is_file():  # a link is the user's doing: kept, as is a folder
        raise FileExistsError(f"{path}: is a link or not a file; --overwrite replaces only gnnmd evaluate's files")
    if not ours(path):
        raise FileExistsError(f"{path}: not written by gnnmd evaluate; --overwrite replaces only those")


def is_evaluation(path: Path) -> bool:
    """A JSON gnnmd evaluate wrote: it holds MARKER (or, from before the marker, its metric keys)."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(result, dict) and (MARKER in result or OLD_KEYS <= result.keys())


def is_parity_plot(path: Path) -> bool:
    """A PNG gnnmd evaluate's parity plot wrote: its metadata (ahead of the image data) names it."""
    from gnnmd.analysis.parity import SOFTWARE

    with open(path, "rb") as file:
        head = file.read(1 << 16)
    return head.startswith(b"\x89PNG\r\n\x1a\n") and SOFTWARE.encode() in head


def _stress(model, data, split: str, info: dict, lj_tail: float | None = None, allow_unknown_types=False) -> dict:
    """The model's virial errors against LAMMPS' virial of the same frames (a rerun with the dataset's own
    force field), on the frames of `split`."""
    import tempfile

    from gnnmd.data import load_frames
    from gnnmd.inference.evaluate import model_virials, select_frames, virial_errors
    from gnnmd.lammps.label import reference_virials

    frames = load_frames(data)
    indices = None
    if split != "all" and (info.config or {}).get("max_frames") is not None:
        raise ValueError(
            "--stress takes the dataset's frames in order: with a run that used --max-frames, use --split all"
        )
    if split != "all":
        frames, indices = select_frames(frames, info, split)
    with tempfile.TemporaryDirectory() as work:
        reference = reference_virials(data, work)
    if indices is not None:
        reference = reference[indices]
    virials = model_virials(model, frames, indices, lj_tail, allow_unknown_types)
    errors = virial_errors(virials, reference, frames, indices)
    return {**errors, "lj_tail": lj_tail}
