"""The checkpoint format: everything needed to rebuild a model and its graphs (family, hyper-parameters
with the one graph cutoff, type table, normalisation, PME settings, gnnmd version, parent for fine-tuned
models), plus the optimiser and trainer state for --resume. Written to a temp file and renamed, so a
kill never leaves half a file. Only plain Python values and tensors are stored, so files load with
`weights_only=True`.

What a checkpoint says about its model reaches its users typed (`CheckpointInfo`), never as a dict of
string keys. The graph cutoff has one owner, the model's `hyper["cutoff"]`; the PME settings, when the
model learned reference minus Coulomb, are PMESettings' form; `force_field` is the training data's
reference force field (gnnmd.data.forcefield), so what the model was trained against travels with it;
`prior` the CG prior a model trained on a residual learned on top of (gnnmd.lammps.cg_prior), which MD
keeps under it (None for every other model, and in files from before it).

Format 3 stores the cutoff once and adds `force_field`; format 2 (gnnmd 0.2) differs from 1 in names
only. `read_checkpoint` upgrades older files as it reads them (the PME real-space cutoff was called
`cutoff`; mpnn's hyper-parameters could lack the graph cutoff that the file kept beside them; PME settings
held two special weights), so every older checkpoint loads and predicts the same."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch

import gnnmd
from gnnmd.data.graphs import LEGACY_BOND_CLASSES
from gnnmd.files import atomic_write, file_sha256
from gnnmd.models import MODELS, build_model
from gnnmd.models.electrostatics import PMESettings, current_config

FORMAT = "gnnmd-checkpoint"
FORMAT_VERSION = 3


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint records about its model, besides the weights."""

    path: str  # the checkpoint file, resolved
    family: str
    hyper: dict  # the model's hyper-parameters, the graph cutoff among them
    type_table: list[dict]
    normalisation: dict
    electrostatics: dict | None = None  # PME settings (PMESettings' fields and the mesh) or None: no PME
    force_field: dict | None = None  # the training data's reference force field (ForceField.to_dict)
    prior: dict | None = None  # the CG prior the model corrects (its force field and tables), kept in MD
    gnnmd_version: str | None = None
    parent: dict | None = None
    config: dict | None = None  # the resolved training configuration
    epoch: int | None = None
    metrics: dict | None = None

    @property
    def cutoff(self) -> float:
        """The graph cutoff (A), the model's own."""
        return float(self.hyper["cutoff"])

    @property
    def pme(self) -> PMESettings | None:
        """The model's PME settings, None if it was trained without PME."""
        return PMESettings.from_stored(self.electrostatics) if self.electrostatics else None

    def saved(self) -> dict:
        """What save_checkpoint takes again to write another checkpoint of the same model (gnnmd walls)."""
        keep = ("type_table", "normalisation", "electrostatics", "force_field", "prior", "parent", "config", "epoch",
                "metrics")  # fmt: skip
        return {key: getattr(self, key) for key in keep}

    @classmethod
    def of(cls, payload: dict, path) -> CheckpointInfo:
        values = {f.name: payload.get(f.name) for f in fields(cls) if f.name != "path"}
        return cls(path=str(Path(path).resolve()), **values)


def save_checkpoint(
    path,
    model,
    *,
    type_table: list[dict],
    normalisation: dict,
    config: dict | None = None,
    parent: dict | None = None,
    epoch: int | None = None,
    metrics: dict | None = None,
    training: dict | None = None,
    electrostatics: dict | None = None,
    force_field: dict | None = None,
    prior: dict | None = None,
) -> Path:
    """Write a checkpoint atomically. `training` (optimiser and trainer state) is only needed to resume."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gnnmd_version": gnnmd.__version__,
        "family": model.family,
        "hyper": dict(model.hyper),
        "type_table": list(type_table),
        "normalisation": dict(normalisation),
        "electrostatics": electrostatics,  # PME settings when the model learned reference minus Coulomb
        "force_field": force_field,  # the training data's reference force field
        "prior": prior,  # the CG prior under the model (a residual's training data), None without one
        "config": config,
        "parent": parent,
        "epoch": epoch,
        "metrics": metrics,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},  # loads anywhere
        "training": training,
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))
    return path


def read_checkpoint(path) -> dict:
    """The checkpoint's contents, or a ValueError naming the file if it is not a readable gnnmd checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a bad file: pickle, zip, EOF, unsupported global
        raise ValueError(f"{path}: not a readable gnnmd checkpoint (corrupt or another format: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a gnnmd checkpoint (a torch file without the '{FORMAT}' marker)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {payload['format_version']} is newer than this gnnmd "
            f"({gnnmd.__version__}) reads ({FORMAT_VERSION})"
        )
    missing = [k for k in ("family", "hyper", "type_table", "normalisation", "state_dict") if k not in payload]
    if missing:
        raise ValueError(f"{path}: gnnmd checkpoint lacks {', '.join(missing)}")
    return _upgrade(payload, path)


def _upgrade(payload: dict, path) -> dict:
    """An older payload in format-3 form: one cutoff (format 1 and 2 kept a copy beside the hyper-parameters;
    format-1 mpnn hyper-parameters could lack it), checked; PME settings in today's names and form."""
    payload["hyper"] = dict(payload["hyper"])
    payload["hyper"].setdefault("edge_classes", LEGACY_BOND_CLASSES)  # made before the 1-4 class
    stored = payload.pop("cutoff", None)
    if payload["hyper"].get("cutoff") is None:
        payload["hyper"]["cutoff"] = stored
    if payload.get("electrostatics"):
        payload["electrostatics"] = current_config(payload["electrostatics"])
    cutoff = payload["hyper"]["cutoff"]
    if not (isinstance(cutoff, (int, float)) and 0 < float(cutoff) < float("inf")):
        raise ValueError(f"{path}: checkpoint cutoff {cutoff!r} is not a positive number of Angstrom")
    if stored is not None and float(stored) != float(cutoff):
        raise ValueError(f"{path}: checkpoint cutoff {stored} differs from its model's {cutoff}")
    payload["format_version"] = FORMAT_VERSION
    return payload


def _check_finite(payload: dict, path) -> None:
    """Weights, buffers (type keys, scales, walls) and the type table must be finite numbers: a NaN there
    gives NaN forces, or silently another type's parameters, in everything the model is used for."""
    bad = [key for key, value in payload["state_dict"].items()
           if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]  # fmt: skip
    for row in payload["type_table"]:
        values = [row.get(key) for key in ("charge", "epsilon", "sigma")]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            bad.append(f"type_table ({row.get('name')}: {values})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(f"{path}: non-finite values (NaN or inf) in {', '.join(bad[:3])}{more}; not a usable model")


def read_info(path) -> CheckpointInfo:
    """What a checkpoint records about its model, without building it."""
    return CheckpointInfo.of(read_checkpoint(path), path)


def load_model(path, family: str | None = None) -> tuple[torch.nn.Module, CheckpointInfo]:
    """(model in eval mode, info) from a checkpoint. `family`, if given, must match the file's."""
    payload = read_checkpoint(path)
    found = payload["family"]
    if family is not None and found != family:
        raise ValueError(f"{path}: holds a {found!r} model, not the {family!r} model asked for")
    if found not in MODELS:
        raise ValueError(
            f"{path}: model family {found!r} is unknown to this gnnmd (known: {', '.join(sorted(MODELS))})"
        )
    _check_finite(payload, path)
    try:
        model = build_model(found, **payload["hyper"])
        model.load_state_dict(payload["state_dict"])
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: weights do not fit a {found} model with {payload['hyper']}: {err}") from None
    model.eval()
    return model, CheckpointInfo.of(payload, path)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointInfo",
    "file_sha256",
    "load_model",
    "read_checkpoint",
    "read_info",
    "save_checkpoint",
]
