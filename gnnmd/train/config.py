"""The run configuration of `gnnmd train` / `gnnmd finetune`: immutable; the trainer derives the values
it resolves (electrostatics "auto", the parent's family and hyper-parameters) as a new config with
`dataclasses.replace`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from gnnmd.devices import check_device_spec
from gnnmd.files import plain_name

LOSSES = ("l1", "mse", "huber")
ELECTROSTATICS = ("auto", "pme", "none")
# `gnnmd finetune`'s own defaults: a trained parent wants a gentler start and fewer epochs; the run name,
# cutoff and model family come from the parent checkpoint (parent_defaults)
FINETUNE_DEFAULTS = {"epochs": 20, "lr": 1e-4, "warmup_epochs": 1}
MAX_CONFIG_BYTES = 1 << 20  # a run config is a few lines; anything bigger is not one


@dataclass(frozen=True)
class TrainConfig:
    data: str
    model: str = "eqforce"
    hyper: dict = field(default_factory=dict)
    name: str | None = None
    runs_dir: str = "runs"
    cutoff: float = 3.4
    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-3
    lr_decay: float = 0.95  # per epoch, after warm-up
    warmup_epochs: int = 5
    zero_penalty: float = 0.0  # warm-up only: weight of the penalty on near-zero predicted forces
    loss: str = "l1"
    huber_delta: float = 1.0  # in units of the force RMS
    energy_weight: float = 0.0
    stress_weight: float = 0.0  # weight of the virial loss (energy models; 0: no virial computed at all)
    electrostatics: str = "auto"  # pme | none | auto (pme when the system has charges)
    seed: int = 0
    val_fraction: float = 0.1
    split_seed: int = 0
    max_frames: int | None = None
    patience: int = 10
    checkpoint_every: int = 6
    augment: bool | None = None  # None: rotate when the model is not equivariant
    max_minutes: float | None = None
    progress: bool = True  # progress bars (on a terminal only)
    quiet: bool = False  # no per-epoch lines on the terminal (train.log in the run folder keeps them)
    tensorboard: bool = False  # also write the metrics for TensorBoard (runs/<name>/tensorboard/)
    overwrite: bool = False
    resume: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N (gnnmd.devices)
    # fine-tuning
    init_from: str | None = None
    freeze: tuple = ()
    keep_normalisation: bool = False

    @property
    def run_name(self) -> str:
        """The run folder's name: --name, or <model>-<data folder name>."""
        return self.name if self.name is not None else f"{self.model}-{Path(self.data).resolve().name}"

    def check(self) -> None:
        """Refuse options that cannot be meant, before anything is read or written: the one check of a
        run's settings (types first, then values), whoever made the config."""
        for f in fields(self):
            problem = type_problem(f.type, getattr(self, f.name))
            if problem:
                raise ValueError(f"{f.name} {problem}")
        if self.tensorboard:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard")
        plain_name(self.run_name, "run name (--name)")
        if not (isinstance(self.cutoff, (int, float)) and math.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"--cutoff must be a positive number of Angstrom, got {self.cutoff!r}")
        check_device_spec(self.device)
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(f"need lr > 0 and 0 < lr_decay <= 1, got {self.lr}, {self.lr_decay}")
        if self.electrostatics not in ELECTROSTATICS:
            raise ValueError(f"electrostatics must be one of {', '.join(ELECTROSTATICS)}, got {self.electrostatics!r}")
        if self.warmup_epochs < 0 or self.energy_weight < 0 or self.zero_penalty < 0:
            raise ValueError("warmup_epochs, energy_weight and zero_penalty must not be negative")
        if not (math.isfinite(self.stress_weight) and self.stress_weight >= 0):
            raise ValueError(f"--stress-weight must be a number >= 0, got {self.stress_weight!r}")
        if self.stress_weight > 0 and self.init_from is None:  # fine-tuning: checked on the parent's family
            check_virial_family(self.model)

    @classmethod
    def from_json(cls, path) -> TrainConfig:
        """The config a run wrote to its config.json (resolved: data path, electrostatics, model and
        hyper-parameters as trained); the file's other keys (frames, normalisation, ...) are ignored."""
        values = json.loads(Path(path).read_text())
        names = {f.name for f in fields(cls)}
        kept = {key: value for key, value in values.items() if key in names}
        kept["freeze"] = tuple(kept.get("freeze") or ())
        return cls(**kept)


def check_virial_family(family: str) -> None:
    """A stress term trains the virial, minus the strain derivative of the energy: only a family that
    predicts an energy has one (an unknown family is left to build_model to name)."""
    from gnnmd.models import MODELS

    if family in MODELS and not MODELS[family].predicts_virial:
        energy_models = ", ".join(sorted(name for name, model in MODELS.items() if model.predicts_virial))
        raise ValueError(
            f"--stress-weight needs an energy model ({energy_models}): {family} predicts forces directly and has "
            "no energy whose strain derivative is the virial"
        )


# ---------------------------------------------------------------- types of the settings

_KINDS = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict, "tuple": tuple}
_SAID = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
         "dict": "a mapping of names to values", "tuple": "a list of names"}  # fmt: skip


def type_problem(annotation: str, value) -> str | None:
    """What is wrong with `value` for a field annotated `annotation` ("int", "float | None", ...), or
    None. A bool is not a number (YAML's `epochs: true` would train one epoch)."""
    kind, _, optional = annotation.partition(" | ")
    if value is None and optional == "None":
        return None
    wanted = _KINDS[kind]
    if not isinstance(value, wanted) or (kind in ("int", "float") and isinstance(value, bool)):
        return f"must be {_SAID[kind]}{' or null' if optional else ''}, got {value!r}"
    if kind == "float" and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if kind in ("dict", "tuple") and not all(isinstance(part, str) for part in value):
        return f"must be {_SAID[kind]}, got {value!r}"
    return None


# ---------------------------------------------------------------- config files


def _no_aliases_loader():
    """A YAML SafeLoader that refuses aliases (*name): a run config has no use for them, and nested
    aliases expand exponentially ("billion laughs")."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ValueError(
                    f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not accepted in a config"
                )
            return super().compose_node(parent, index)

    return Loader


def _parse(path: Path, text: str):
    """The file's content: YAML (.yaml, .yml; no aliases) or JSON."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return json.loads(text)
    import yaml

    try:
        return yaml.load(text, Loader=_no_aliases_loader())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        raise ValueError(f"not valid YAML: {err.problem} (line {mark.line + 1}, column {mark.column + 1})") from None
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML: {' '.join(str(err).split())}") from None


def read_config_file(path, allowed=()) -> dict:
    """Options from a YAML or JSON file: a mapping of TrainConfig names, each of its field's type (a
    run's config.json works: its keys in `allowed`, such as frame counts and normalisation, are left
    out). Every problem is one line naming the file and the key."""
    path = Path(path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes is not a run config (at most {MAX_CONFIG_BYTES})")
    try:
        values = _parse(path, path.read_text())
    except ValueError as err:  # JSON, YAML, aliases, not UTF-8
        raise ValueError(f"{path}: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deep to be a run config") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file holds a mapping of option names to values")
    types = {f.name: f.type for f in fields(TrainConfig)}
    unknown = [key for key in values if key not in types and key not in allowed]
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(map(str, unknown))}; known: {', '.join(types)}")
    values = {key: value for key, value in values.items() if key in types}
    if isinstance(values.get("freeze"), (list, str)):  # a list, or "encoders,mp1" as on the command line
        values["freeze"] = _freeze_parts(values["freeze"])
    for key, value in values.items():
        problem = type_problem(types[key], value)
        if problem:
            raise ValueError(f"{path}: {key} {problem}")
    return values


def _freeze_parts(freeze) -> tuple:
    parts = freeze.split(",") if isinstance(freeze, str) else freeze
    return tuple(part.strip() if isinstance(part, str) else part for part in parts if part != "")


# ---------------------------------------------------------------- the one place settings are decided

# what a run's config.json records beside the TrainConfig fields (derived by the run, not options)
RUN_RECORD_KEYS = ("frames", "train_frames", "val_frames", "atoms", "normalisation", "type_table", "world_size",
                   "gnnmd_version", "parameters", "trainable_parameters", "parent")  # fmt: skip


def make_config(flags: dict, config_file=None, finetune: bool = False) -> TrainConfig:
    """The run's settings, decided in one place: each flag given on the command line (None: not given)
    over the config file's value over the default, TrainConfig's or, fine-tuning, FINETUNE_DEFAULTS and
    the parent checkpoint's (run name, cutoff; its family always). Checked once, before anything is
    read or written."""
    given = read_config_file(config_file, RUN_RECORD_KEYS) if config_file is not None else {}
    given = _one_cutoff(given, config_file)
    flags = {key: str(value) if isinstance(value, Path) else value for key, value in flags.items() if value is not None}
    if "cutoff" in flags.get("hyper", {}):
        raise ValueError(f"set the cutoff with --cutoff, not --hyper cutoff={flags['hyper']['cutoff']}")
    if isinstance(flags.get("freeze"), str):
        flags["freeze"] = _freeze_parts(flags["freeze"])
    values = {**given, **flags, "hyper": {**given.get("hyper", {}), **flags.get("hyper", {})}}
    if values.get("data") is None:
        raise ValueError("no dataset: give --data (or `data` in --config)")
    if finetune:
        parent = parent_defaults(values["init_from"], values["data"])
        values = {**FINETUNE_DEFAULTS, **parent, **values, "model": parent["model"]}
    config = TrainConfig(**values)
    config.check()
    if finetune and config.stress_weight > 0:  # check() cannot know a bare config's parent; this one is resolved
        check_virial_family(config.model)
    return config


def _one_cutoff(given: dict, path) -> dict:
    """A config file's values with the graph cutoff in `cutoff` only: a run's config.json also records it
    in the model's hyper-parameters, where it must agree and is dropped."""
    hyper = given.get("hyper", {})
    if "cutoff" not in hyper:
        return given
    if given.get("cutoff") != hyper["cutoff"]:
        raise ValueError(
            f"{path}: hyper.cutoff {hyper['cutoff']!r} is not cutoff {given.get('cutoff')!r}; "
            "the graph cutoff is set by `cutoff` alone"
        )
    return {**given, "hyper": {key: value for key, value in hyper.items() if key != "cutoff"}}


def parent_defaults(init_from, data) -> dict:
    """Fine-tuning's defaults from the parent checkpoint: the run name <family>-finetune-<data dir name>,
    the parent's cutoff, and its model family."""
    from gnnmd.models.checkpoint import read_info

    parent = read_info(init_from)
    name = f"{parent.family}-finetune-{Path(data).resolve().name}"
    return {"name": name, "cutoff": parent.cutoff, "model": parent.family}
