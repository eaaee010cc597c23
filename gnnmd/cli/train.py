"""`gnnmd train`, `gnnmd finetune` and `gnnmd walls`: parse, call gnnmd.train, print."""

from __future__ import annotations

import json
from pathlib import Path

from gnnmd.cli.common import add_device, set_threads
from gnnmd.train.config import ELECTROSTATICS, LOSSES, TrainConfig, check_virial_family
from gnnmd.train.setup import RUN_RECORD_KEYS


def _hyper(text: str) -> tuple[str, object]:
    import argparse

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"hyper-parameter must be NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _common(p, finetune: bool) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="YAML or JSON file of options (TrainConfig names, e.g. a run's own config.json); flags given "
        "on the command line override it",
    )
    p.add_argument(
        "--data", type=Path, help="dataset directory made by `gnnmd generate` (required, here or in --config)"
    )
    p.add_argument("--name", help="run name (default: <model>-<data dir name>)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where runs/<name>/ goes (default ./runs)")
    if finetune:
        p.add_argument(
            "--cutoff", type=float, help="graph cutoff in A (default: the parent's; argon's LJ tail wants ~7)"
        )
    else:
        p.add_argument("--cutoff", type=float, default=3.4, help="graph cutoff in A (study: 3.4 for water)")
    p.add_argument("--epochs", type=int, default=20 if finetune else 50)
    p.add_argument("--batch-size", type=int, default=4, help="frames per step (per process under torchrun)")
    p.add_argument("--lr", type=float, default=1e-4 if finetune else 1e-3, help="peak learning rate (Adam)")
    p.add_argument("--lr-decay", type=float, default=0.95, help="per-epoch exponential decay after warm-up")
    p.add_argument(
        "--warmup", dest="warmup_epochs", type=int, default=1 if finetune else 5, help="warm-up epochs (linear ramp)"
    )
    p.add_argument(
        "--electrostatics",
        choices=ELECTROSTATICS,
        default="auto",
        help="PME Coulomb of the node charges added to the model, which learns the rest (auto: pme when the system has charges)",
    )
    _loss_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-frames", type=int, help="use this many frames, spread evenly over the dataset")
    p.add_argument("--patience", type=int, default=10, help="early stopping: epochs without validation improvement")
    p.add_argument("--checkpoint-every", type=int, default=6, help="epochs between checkpoints")
    p.add_argument(
        "--augment",
        dest="augment",
        action="store_true",
        default=None,
        help="random rotations (default: only for non-equivariant models)",
    )
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that crosses this wall time")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_device(p)
    p.add_argument("--resume", action="store_true", help="continue runs/<name>/ from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    _output_options(p)


def _loss_options(p) -> None:
    """What the loss is made of: its kind, and the weights of its terms beside the forces."""
    p.add_argument(
        "--zero-penalty", type=float, default=0.0, help="warm-up penalty weight on near-zero predicted forces"
    )
    p.add_argument("--loss", choices=LOSSES, default="l1")
    p.add_argument("--huber-delta", type=float, default=1.0, help="Huber threshold in units of the force RMS")
    p.add_argument(
        "--energy-weight", type=float, default=0.0, help="weight of the per-atom energy loss (energy models)"
    )
    p.add_argument(
        "--stress-weight",
        type=float,
        default=0.0,
        help="weight of the per-atom virial loss (energy models on `gnnmd generate` datasets; the reference "
        "virials come from a LAMMPS rerun of the frames, kept in the dataset folder)",
    )


def _output_options(p) -> None:
    """What a run shows and logs."""
    p.add_argument("--no-progress", action="store_true", help="no progress bars (shown on a terminal only anyway)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines either (runs/<name>/train.log has them)")
    p.add_argument(
        "--tensorboard", action="store_true", help="also log the metrics for TensorBoard (runs/<name>/tensorboard/)"
    )


def add_train(sub) -> None:
    from gnnmd.models import MODELS

    p = sub.add_parser(
        "train",
        help="train a force model on a generated dataset",
        description="Train a model on frames from `gnnmd generate`; writes runs/<name>/ (config.json, metrics.csv, "
        "checkpoints/, best.pt, summary.txt). Runs data-parallel under `torchrun --nproc_per_node N -m gnnmd.cli train ...`.",
    )
    p.add_argument("--model", choices=sorted(MODELS), default="eqforce")
    p.add_argument(
        "--hyper",
        type=_hyper,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="model hyper-parameter, e.g. hidden=64 (repeatable)",
    )
    _common(p, finetune=False)
    p.set_defaults(func=run_train)


def add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="continue training a checkpoint on a new system",
        description="Start from a trained model, optionally freeze parts of it, and train on new data with its own "
        "learning rate and epochs. Types come from the new data; the parent checkpoint is recorded.",
    )
    p.add_argument("--from", dest="init_from", type=Path, required=True, help="parent checkpoint (e.g. runs/X/best.pt)")
    p.add_argument(
        "--freeze",
        default="",
        help="comma-separated parts to keep fixed: encoders, mp1, mp2, mp3, decoder, or a parameter prefix",
    )
    p.add_argument(
        "--keep-normalisation", action="store_true", help="keep the parent's force scale instead of the new data's"
    )
    _common(p, finetune=True)
    p.set_defaults(func=run_finetune)


def read_config_file(path: Path) -> dict:
    """Options from a YAML or JSON file: a mapping of TrainConfig names (a run's config.json works: the keys
    that are not options, such as its frame counts and normalisation, are left out)."""
    text = Path(path).read_text()
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text)
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file holds a mapping of option names to values")
    fields = TrainConfig.__dataclass_fields__
    unknown = [key for key in values if key not in fields and key not in RUN_RECORD_KEYS]
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(fields)}")
    return {key: value for key, value in values.items() if key in fields}


def config_defaults(parser, argv: list[str]) -> None:
    """For `gnnmd train|finetune --config FILE`: the file's options become the subcommand's defaults, so
    that the flags on the command line override them."""
    known, _ = parser.parse_known_args(argv)
    if getattr(known, "config", None) is None or known.command not in ("train", "finetune"):
        return
    values = read_config_file(known.config)
    if "hyper" in values:
        values["hyper"] = list(dict(values["hyper"]).items())
    if "progress" in values:
        values["no_progress"] = not values.pop("progress")
    if "freeze" in values and not isinstance(values["freeze"], str):
        values["freeze"] = ",".join(values["freeze"])
    for key in ("data", "runs_dir", "init_from"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    parser.commands[known.command].set_defaults(**values)


def _config(args, **extra) -> TrainConfig:
    if args.data is None:
        raise ValueError("no dataset: give --data (or `data` in --config)")
    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values.update(extra)
    values["data"] = str(args.data)
    values["runs_dir"] = str(args.runs_dir)
    values["progress"] = not args.no_progress
    if args.augment is not None:
        values["augment"] = args.augment
    return TrainConfig(**values)


def _print_summary(summary: dict, quiet: bool = False) -> int:
    if "line" in summary and not quiet:
        print(summary["line"])
    return 0


def _reference_virials(config: TrainConfig) -> None:
    """With --stress-weight: the dataset's reference virials stored in its folder (LAMMPS reruns, once per
    dataset; gnnmd.lammps.label.cached_reference_virials), where training reads them. The options are
    checked first, so a wrong family is refused before LAMMPS runs."""
    if not config.stress_weight > 0:
        return
    config.check()
    check_virial_family(config.model)  # fine-tuning: the parent's
    from gnnmd.lammps.label import cached_reference_virials

    cached_reference_virials(config.data)


def run_train(args) -> int:
    from gnnmd.train import train

    set_threads(args.threads)
    config = _config(args, model=args.model, hyper=dict(args.hyper))
    _reference_virials(config)
    return _print_summary(train(config), config.quiet)


def run_finetune(args) -> int:
    from gnnmd.train import train
    from gnnmd.train.setup import finetune_defaults

    set_threads(args.threads)
    freeze = tuple(part.strip() for part in args.freeze.split(",") if part.strip())
    defaults = finetune_defaults(args.init_from, args.data, args.name, args.cutoff)
    config = _config(args, init_from=str(args.init_from), freeze=freeze, **defaults)
    _reference_virials(config)
    return _print_summary(train(config), config.quiet)


def add_walls(sub) -> None:
    p = sub.add_parser(
        "walls",
        help="refit an energy model's walls from its training data into a new checkpoint",
        description="The energy models' walls (nequip, csnequip) keep MD inside the distances its training frames covered (too "
        "close: pushed apart; a bond or 1-3 pair stretched too far: pulled together). They are zero on the "
        "training data, so refitting them onto a trained model gives what training with them would have; "
        "use it for checkpoints from before a wall existed or to change its strength or margin.",
    )
    p.add_argument("--model", type=Path, required=True, help="nequip or csnequip checkpoint (.pt)")
    p.add_argument("--data", type=Path, required=True, help="the model's training dataset (`gnnmd generate`)")
    p.add_argument("--out", type=Path, required=True, help="new checkpoint (.pt)")
    p.add_argument("--strength", type=float, help="wall k in kcal/mol/A^3 (default: the model's)")
    p.add_argument(
        "--margin", type=float, help="walls at margin x shortest and longest / margin (default: the model's)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run_walls)


def run_walls(args) -> int:
    from gnnmd.train.walls import refit_walls

    print(json.dumps(refit_walls(args.model, args.data, args.out, args.strength, args.margin, args.overwrite)))
    return 0
