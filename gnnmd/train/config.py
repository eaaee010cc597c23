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
        """Refuse options that cannot be meant, before anything is read or written."""
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
