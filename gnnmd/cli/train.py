"""`gnnmd train`, `gnnmd finetune` and `gnnmd walls`: parse, call gnnmd.train, print."""

from __future__ import annotations

import json
from pathlib import Path

from gnnmd.cli.common import add_device, set_threads
from gnnmd.train.config import ELECTROSTATICS, FINETUNE_DEFAULTS, LOSSES, TrainConfig, make_config


def _hyper(text: str) -> tuple[str, object]:
    import argparse

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"hyper-parameter must be NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _default(name: str, finetune: bool = False) -> str:
    """The default of a setting, for --help: TrainConfig owns it (FINETUNE_DEFAULTS when fine-tuning)."""
    if finetune and name in FINETUNE_DEFAULTS:
        return f"default {FINETUNE_DEFAULTS[name]}"
    return f"default {TrainConfig.__dataclass_fields__[name].default}"


def _common(p, finetune: bool) -> None:
    """The options train and finetune share. None of them has a default here ("not given"): make_config
    lays them over --config's values and those over TrainConfig's defaults."""
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
    p.add_argument("--runs-dir", type=Path, help="where runs/<name>/ goes (default ./runs)")
    cutoff = "default: the parent's; argon's LJ tail wants ~7" if finetune else _default("cutoff") + ", for water"
    p.add_argument("--cutoff", type=float, help=f"graph cutoff in A ({cutoff})")
    p.add_argument("--epochs", type=int, help=_default("epochs", finetune))
    p.add_argument(
        "--batch-size", type=int, help=f"frames per step (per process under torchrun; {_default('batch_size')})"
    )
    p.add_argument("--lr", type=float, help=f"peak learning rate (Adam; {_default('lr', finetune)})")
    p.add_argument("--lr-decay", type=float, help=f"per-epoch exponential decay after warm-up ({_default('lr_decay')})")
    p.add_argument(
        "--warmup",
        dest="warmup_epochs",
        type=int,
        help=f"warm-up epochs (linear ramp; {_default('warmup_epochs', finetune)})",
    )
    p.add_argument(
        "--electrostatics",
        choices=ELECTROSTATICS,
        help="PME Coulomb of the node charges added to the model, which learns the rest (auto, the default: pme "
        "when the system has charges)",
    )
    _loss_options(p)
    p.add_argument("--seed", type=int, help=_default("seed"))
    p.add_argument("--val-fraction", type=float, help=_default("val_fraction"))
    p.add_argument("--split-seed", type=int, help=_default("split_seed"))
    p.add_argument("--max-frames", type=int, help="use this many frames, spread evenly over the dataset")
    p.add_argument(
        "--patience", type=int, help=f"early stopping: epochs without validation improvement ({_default('patience')})"
    )
    p.add_argument("--checkpoint-every", type=int, help=f"epochs between checkpoints ({_default('checkpoint_every')})")
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
    p.set_defaults(device=None)  # not given: --config's, else TrainConfig's ("auto")
    p.add_argument(
        "--resume", action="store_true", default=None, help="continue runs/<name>/ from its latest checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing run directory")
    _output_options(p)


def _loss_options(p) -> None:
    """What the loss is made of: its kind, and the weights of its terms beside the forces."""
    p.add_argument(
        "--zero-penalty",
        type=float,
        help=f"warm-up penalty weight on near-zero predicted forces ({_default('zero_penalty')})",
    )
    p.add_argument("--loss", choices=LOSSES, help=_default("loss"))
    p.add_argument(
        "--huber-delta", type=float, help=f"Huber threshold in units of the force RMS ({_default('huber_delta')})"
    )
    p.add_argument(
        "--energy-weight",
        type=float,
        help=f"weight of the per-atom energy loss (energy models; {_default('energy_weight')})",
    )
    p.add_argument(
        "--stress-weight",
        type=float,
        help="weight of the per-atom virial loss (energy models on `gnnmd generate` datasets; the reference "
        f"virials come from a LAMMPS rerun of the frames, kept in the dataset folder; {_default('stress_weight')})",
    )


def _output_options(p) -> None:
    """What a run shows and logs."""
    p.add_argument("--no-progress", action="store_true", help="no progress bars (shown on a terminal only anyway)")
    p.add_argument(
        "--quiet", action="store_true", default=None, help="no per-epoch lines either (runs/<name>/train.log has them)"
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        default=None,
        help="also log the metrics for TensorBoard (runs/<name>/tensorboard/)",
    )


def add_train(sub) -> None:
    from gnnmd.models import MODELS

    p = sub.add_parser(
        "train",
        help="train a force model on a generated dataset",
        description="Train a model on frames from `gnnmd generate`; writes runs/<name>/ (config.json, metrics.csv, "
        "checkpoints/, best.pt, summary.txt). Runs data-parallel under `torchrun --nproc_per_node N -m gnnmd.cli train ...`.",
    )
    p.add_argument("--model", choices=sorted(MODELS), help=_default("model"))
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
        help="comma-separated parts to keep fixed: encoders, mp1, mp2, mp3, decoder, or a parameter prefix",
    )
    p.add_argument(
        "--keep-normalisation",
        action="store_true",
        default=None,
        help="keep the parent's force scale instead of the new data's",
    )
    _common(p, finetune=True)
    p.set_defaults(func=run_finetune)


def _config(args, finetune: bool) -> TrainConfig:
    """The run's TrainConfig: the command line's flags (None where not given) over --config's values over
    the defaults, in gnnmd.train.config.make_config."""
    flags = {key: value for key, value in vars(args).items() if key in TrainConfig.__dataclass_fields__}
    flags["progress"] = False if args.no_progress else None
    if "hyper" in flags:
        flags["hyper"] = dict(flags["hyper"] or [])
    return make_config(flags, args.config, finetune=finetune)


def _print_summary(summary: dict, quiet: bool = False) -> int:
    if "line" in summary and not quiet:
        print(summary["line"])
    return 0


def _reference_virials(config: TrainConfig) -> None:
    """With --stress-weight: the dataset's reference virials stored in its folder (LAMMPS reruns, once per
    dataset; gnnmd.lammps.label.cached_reference_virials), where training reads them. The config is
    checked already (make_config), fine-tuning's family included, so a wrong one is refused before LAMMPS runs."""
    if not config.stress_weight > 0:
        return
    from gnnmd.lammps.label import cached_reference_virials

    cached_reference_virials(config.data)


def run_train(args) -> int:
    from gnnmd.train import train

    set_threads(args.threads)
    config = _config(args, finetune=False)
    _reference_virials(config)
    return _print_summary(train(config), config.quiet)


def run_finetune(args) -> int:
    from gnnmd.train import train

    set_threads(args.threads)
    config = _config(args, finetune=True)
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
