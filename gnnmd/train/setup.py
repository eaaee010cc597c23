"""Everything a run needs before its first epoch: the frames and their split, the reference virials (with
a stress term), the Coulomb cache, the normalisation, the model (new, or fine-tuned from a parent
checkpoint), the run directory, the state to resume, and the resolved configuration that config.json and
every checkpoint record.

Forces are learned in units of the training set's force RMS (the model multiplies its output by a
stored `force_scale`), so a force-only loss has an O(1) target and cannot settle on zero (seed 000)."""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

import gnnmd
from gnnmd.data import (
    FrameDataset,
    ReferenceVirials,
    chosen_frame_indices,
    coulomb_cache,
    load_frames,
    read_reference_virials,
    run_split,
)
from gnnmd.data.forcefield import ForceField, dataset_force_field
from gnnmd.data.frames import ADDED_SEGMENTS
from gnnmd.data.reader import read_manifest
from gnnmd.data.virial_cache import virial_cache_path
from gnnmd.files import file_sha256
from gnnmd.inference.metrics import type_labels
from gnnmd.models import build_model
from gnnmd.models.checkpoint import load_model, read_checkpoint
from gnnmd.train.config import TrainConfig, check_virial_family
from gnnmd.train.distributed import Distributed
from gnnmd.train.run_folder import RunFolder

# what may change when a run is resumed: how long it goes on, and how it reports
MAY_CHANGE_ON_RESUME = (
    "epochs", "patience", "checkpoint_every", "max_minutes", "progress", "quiet", "tensorboard", "overwrite", "resume", "device"
)  # fmt: skip

# ---------------------------------------------------------------- data


@dataclass
class RunData:
    """The run's frames and split; the type table is always the data's own, also when fine-tuning."""

    path: Path
    frames: object
    train_idx: np.ndarray
    val_idx: np.ndarray
    type_table: list
    labels: list
    virials: ReferenceVirials | None = None  # of `frames`, with a stress term only
    force_field: ForceField | None = None  # the dataset's reference force field, if it names one
    prior: dict | None = None  # the CG prior the dataset is the residual of (gnnmd coarse-grain residual)


def load_data(config: TrainConfig) -> RunData:
    path = Path(config.data)
    frames = load_frames(path)
    virials = stored_virials(path, frames, config.max_frames) if config.stress_weight > 0 else None
    frames, train_idx, val_idx = run_split(frames, config.max_frames, config.val_fraction, config.split_seed)
    if config.energy_weight > 0 and frames.energies is None:
        raise ValueError(f"{path}: has no energies, so --energy-weight must be 0")
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"{path}: {len(frames)} frames give an empty train or validation split")
    type_table = frames.topology.type_table()
    force_field = dataset_force_field(path) if path.is_dir() else None
    prior = read_manifest(path).get("prior") if path.is_dir() else None
    return RunData(path, frames, train_idx, val_idx, type_table, type_labels(type_table), virials, force_field, prior)


def stored_virials(path: Path, frames, max_frames: int | None) -> ReferenceVirials:
    """The reference virials of the dataset's frames (all of them, `frames`) as stored in its folder, for
    the frames a run with `max_frames` keeps. Training does not run LAMMPS: `gnnmd train --stress-weight`
    (gnnmd.lammps.label.cached_reference_virials) stores them before it starts."""
    if not path.is_dir():
        raise ValueError(f"{path}: --stress-weight needs a dataset folder (its reference virials are kept there)")
    virials = read_reference_virials(frames, path)
    if virials is None:
        raise ValueError(
            f"{path}: no reference virials of these frames ({virial_cache_path(frames, path).name}); "
            "`gnnmd train --stress-weight` computes them with a LAMMPS rerun of the dataset's force field"
        )
    return virials.subset(chosen_frame_indices(len(frames), max_frames))


def check_cutoff(config: TrainConfig, data: RunData) -> None:
    """A cutoff that leaves a frame without atom pairs would train a model that sees nothing."""
    probe = FrameDataset(data.frames, config.cutoff, data.train_idx[:1])[0]
    if probe.edge_index.shape[1] == 0:
        raise ValueError(
            f"{data.path}: no atom pairs closer than the cutoff {config.cutoff} A; the model would see nothing"
        )


# ---------------------------------------------------------------- electrostatics and scales


def resolve_electrostatics(config: TrainConfig, frames) -> TrainConfig:
    """The config with `auto` made `pme` (the system has charges) or `none`."""
    from gnnmd.models.electrostatics import has_charges

    charged = has_charges(frames.topology)
    choice = config.electrostatics
    if choice == "auto":
        choice = "pme" if charged else "none"
    if choice == "pme" and not charged:
        raise ValueError(
            f"{Path(config.data)}: the system has no charges, so --electrostatics pme adds nothing; use none"
        )
    return replace(config, electrostatics=choice)


def check_prior(config: TrainConfig, data: RunData) -> None:
    """A residual under a CG prior is learned without PME: MD runs the prior's pair table and cannot run
    LAMMPS' Coulomb beside it, so such a model could not be used."""
    if data.prior is not None and config.electrostatics == "pme":
        raise ValueError(
            f"{data.path}: is the residual under a CG prior, which gnnmd md cannot combine with PME Coulomb; "
            "train it with --electrostatics none"
        )


def coulomb_for(config: TrainConfig, data: RunData, dist: Distributed):
    """(Coulomb cache of every frame, PME settings for the checkpoint), or (None, None) without PME. The
    special_bonds weights and accuracy are the dataset's reference force field's (PMESettings' defaults,
    SPC/Fw's, for a dataset that names none).

    The cache is computed once (rank 0 first, next to the dataset's frames.npz, so the other ranks and
    later runs read it) and the network learns the rest."""
    from gnnmd.models.electrostatics import Electrostatics, PMESettings

    if config.electrostatics == "none":
        return None, None
    frames = data.frames
    force_field = data.force_field
    settings = PMESettings.for_force_field(force_field) if force_field is not None else PMESettings()
    electrostatics = Electrostatics.for_system(frames.topology, frames.mean_cell(), settings)
    directory = data.path if data.path.is_dir() else None
    cache = None
    virials = config.stress_weight > 0  # the stress term's targets are reference minus Coulomb too
    if dist.main:
        cache = coulomb_cache(frames, directory, electrostatics, progress=config.progress, virials=virials)
    dist.barrier()
    if cache is None:
        cache = coulomb_cache(frames, directory, electrostatics, progress=False, virials=virials)
    return cache, electrostatics.config()


def normalisation_from(frames, train_idx, coulomb=None) -> dict:
    """Scales of what the network learns: the forces, or reference minus Coulomb with PME."""
    forces = frames.forces[train_idx].astype(np.float64)
    energies = None if frames.energies is None else frames.energies[train_idx]
    if coulomb is not None:
        forces = forces - coulomb.forces[train_idx]
        energies = None if energies is None else energies - coulomb.energies[train_idx]
    norm = {"force_scale": float(np.sqrt(np.mean(forces**2))), "force_mean_abs": float(np.mean(np.abs(forces)))}
    if energies is not None:
        norm["energy_shift"] = float(np.mean(energies) / frames.topology.n_atoms)
    if not norm["force_scale"] > 0:
        raise ValueError("the training forces are all zero; nothing to learn")
    return norm


# ---------------------------------------------------------------- the model


def _new_model(config: TrainConfig):
    """(model, config with the model's hyper-parameters): a fresh model seeded from config.seed."""
    if config.freeze:
        raise ValueError("--freeze only makes sense when fine-tuning from a checkpoint")
    hyper = dict(config.hyper)
    if float(hyper.get("cutoff", config.cutoff)) != float(config.cutoff):
        raise ValueError(f"set the cutoff with --cutoff ({config.cutoff} A), not --hyper cutoff={hyper['cutoff']}")
    hyper["cutoff"] = float(config.cutoff)
    torch.manual_seed(config.seed)
    model = build_model(config.model, **hyper)
    return model, replace(config, hyper=dict(model.hyper))


def _parent_model(config: TrainConfig):
    """(model, config with the parent's family and hyper-parameters, parent record, parent's
    normalisation): the checkpoint at config.init_from, moved to config.cutoff, with config.freeze fixed."""
    model, info = load_model(config.init_from)
    if float(config.cutoff) != float(info.cutoff):
        if config.keep_normalisation:
            raise ValueError(
                f"{config.init_from}: --keep-normalisation keeps the parent's neighbour count, which a new "
                f"cutoff ({config.cutoff} A, parent {info.cutoff} A) changes; drop one of the two"
            )
        model = model.with_cutoff(config.cutoff)
    parent = {
        "path": info.path,
        "sha256": file_sha256(config.init_from),
        "family": info.family,
        "gnnmd_version": info.gnnmd_version,
        "type_table": info.type_table,
        "normalisation": info.normalisation,
    }
    for group in config.freeze:
        for _, p in model.parameters_of(group):
            p.requires_grad_(False)
    config = replace(config, model=info.family, hyper=dict(model.hyper))
    return model, config, parent, info.normalisation


def prepare_model(config: TrainConfig, data: RunData, coulomb, normalisation: dict):
    """(model, resolved config, normalisation, parent record or None). Fine-tuning with
    keep_normalisation takes the parent's normalisation and fits no priors; otherwise the model fits
    its priors (nequip: per-type scales, walls) on the training frames."""
    parent = None
    if config.init_from:
        model, config, parent, parent_normalisation = _parent_model(config)
        if config.keep_normalisation:
            normalisation = dict(parent_normalisation)
    else:
        model, config = _new_model(config)
    if data.force_field is not None and hasattr(model, "follow_force_field"):
        # csnequip: the data's mixing rule and special_bonds weights, also over a parent's (they describe
        # the reference the new forces come from); data naming no force field keep the model's own
        model.follow_force_field(data.force_field, data.frames.topology)
        config = replace(config, hyper=dict(model.hyper))
    if config.stress_weight > 0:
        check_virial_family(model.family)
    model.set_normalisation(normalisation)
    if not (config.init_from and config.keep_normalisation):
        fitted = model.fit_priors(data.frames, coulomb=coulomb, indices=reference_frames(data.frames, data.train_idx))
        if fitted is not None:
            normalisation["model_fit"] = fitted
    return model, config, normalisation, parent


def reference_frames(frames, indices) -> np.ndarray:
    """The frames among `indices` that priors are fitted on: those of the reference's own dynamics. Frames
    added by active learning come from the model's MD where it went wrong (an angle collapsed, two O atoms
    at 2.3 A); their labels teach the network, but walls fitted on them would open up to exactly those
    places. All of `indices` if no frame is the reference's."""
    indices = np.asarray(indices)
    own = indices[np.asarray(frames.segments)[indices] < ADDED_SEGMENTS]
    return own if len(own) else indices


# ---------------------------------------------------------------- run directory and resume


def prepare_run_dir(config: TrainConfig, dist: Distributed) -> RunFolder:
    """The run's folder, decided on every rank from what exists now, then opened (locked, created) by
    rank 0 only. Call it once everything else is checked: it is the first thing that writes."""
    folder = RunFolder(config.runs_dir, config.run_name)
    folder.plan(config.resume, config.overwrite)
    folder.path = Path(dist.all_same(str(folder.path))[0])  # rank 0's decision, should ranks have differed
    if dist.main:
        folder.open()
    dist.barrier()
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("epoch_*.pt"))
    return found[-1] if found else None


@dataclass
class TrainingState:
    """Where the epoch loop starts, its metrics rows so far, and the best validation loss."""

    start_epoch: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_loss": math.inf, "epoch": None, "bad_epochs": 0})


def _check_resumable(config: TrainConfig, ckpt_path: Path, payload: dict) -> None:
    """A resumed run continues the checkpoint's run with the same settings; only how long it goes on
    (and where it is) may change. Every other difference is refused, listed."""
    if payload.get("training") is None:
        raise ValueError(f"{ckpt_path}: holds no training state to resume")
    saved, ours = payload["config"], asdict(config)
    ours["data"] = str(Path(config.data).resolve())
    # an option newer than the checkpoint's run had its default there
    saved = {**{f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}, **saved}

    def plain(value):
        return json.loads(json.dumps(value))

    differ = [
        f"{key} {saved.get(key)!r} -> {ours[key]!r}"
        for key in ours
        if key not in MAY_CHANGE_ON_RESUME and plain(saved.get(key)) != plain(ours[key])
    ]
    if differ:
        raise ValueError(
            f"{ckpt_path}: --resume continues that run with its own settings, and these differ: "
            + "; ".join(differ)
            + " (start a new run, or pass the same options)"
        )


def resume_state(config: TrainConfig, run_dir: Path, model, optimizer) -> TrainingState:
    """A fresh state, or (config.resume) the latest checkpoint's, with its weights and optimiser state
    loaded into `model` and `optimizer`."""
    if not config.resume:
        return TrainingState()
    ckpt_path = latest_checkpoint(run_dir)
    if ckpt_path is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no checkpoint to resume from")
    payload = read_checkpoint(ckpt_path)
    _check_resumable(config, ckpt_path, payload)
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["training"]["optimizer"])
    training = payload["training"]
    return TrainingState(payload["epoch"], training["history"], training["best"])


def resolved_config(config: TrainConfig, data: RunData, model, normalisation, parent, world: int) -> dict:
    """What config.json and every checkpoint record: the config's fields (data path resolved) and what
    the run derived from them."""
    resolved = asdict(config)
    resolved["data"] = str(data.path.resolve())
    resolved["freeze"] = list(config.freeze)
    resolved.update(
        frames=len(data.frames),
        train_frames=len(data.train_idx),
        val_frames=len(data.val_idx),
        atoms=data.frames.topology.n_atoms,
        normalisation=normalisation,
        type_table=data.type_table,
        world_size=world,
        gnnmd_version=gnnmd.__version__,
        parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        parent=parent,
    )
    return resolved
