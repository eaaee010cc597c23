"""The training loop shared by `gnnmd train` and `gnnmd finetune`.

Choices, and why:
- Forces are learned in units of the training set's force RMS (the model multiplies its output by a
  stored `force_scale`), so a force-only loss has an O(1) target and cannot settle on zero (seed 000).
- Every random choice in an epoch (shuffle order, rotations, dropout) is seeded from (seed, epoch,
  rank), and the learning rate is a function of (epoch, step): a run resumed from a checkpoint
  replays exactly what the uninterrupted run would have done.
- Data parallel (torchrun): each rank takes every world_size-th frame of the epoch's order, DDP
  averages gradients, validation sums are all-reduced; only rank 0 writes files."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import gnnmd
from gnnmd.data import FrameDataset, choose_frames, coulomb_cache, load_frames, make_loader, split_indices
from gnnmd.files import file_sha256
from gnnmd.inference.metrics import ForceMetrics, type_labels
from gnnmd.models import build_model
from gnnmd.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from gnnmd.train.augment import random_rotations, rotate_batch

LOSSES = ("l1", "mse", "huber")
ELECTROSTATICS = ("auto", "pme", "none")


@dataclass
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
    electrostatics: str = "auto"  # pme | none | auto (pme when the system has charges)
    seed: int = 0
    val_fraction: float = 0.1
    split_seed: int = 0
    max_frames: int | None = None
    patience: int = 10
    checkpoint_every: int = 6
    augment: bool | None = None  # None: rotate when the model is not equivariant
    max_minutes: float | None = None
    progress: bool = True
    overwrite: bool = False
    resume: bool = False
    # fine-tuning
    init_from: str | None = None
    freeze: list = field(default_factory=list)
    keep_normalisation: bool = False

    def check(self) -> None:
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


# ---------------------------------------------------------------- pieces


def learning_rate(config: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear ramp over the warm-up epochs, then lr * decay^(epochs since warm-up)."""
    if epoch < config.warmup_epochs:
        progress = (epoch * steps_per_epoch + step + 1) / (config.warmup_epochs * steps_per_epoch)
        return config.lr * progress
    return config.lr * config.lr_decay ** (epoch - config.warmup_epochs)


def force_loss(kind: str, pred, target, delta: float = 1.0):
    if kind == "l1":
        return torch.nn.functional.l1_loss(pred, target)
    if kind == "mse":
        return torch.nn.functional.mse_loss(pred, target)
    return torch.nn.functional.huber_loss(pred, target, delta=delta)


def zero_penalty(pred_normalised):
    """Mean of relu(1 - |F_i|) in normalised units: pushes predictions off zero early in training (the
    issue's reading of the study's warm-up penalty)."""
    return torch.relu(1.0 - pred_normalised.norm(dim=1)).mean()


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def rank_order(indices: np.ndarray, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's frames for the epoch: a seeded permutation, padded so every rank gets as many."""
    order = np.random.default_rng([seed, epoch]).permutation(indices)
    if world > 1:
        pad = (-len(order)) % world
        order = np.concatenate([order, order[:pad]])
    return order[rank::world]


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


class Distributed:
    """Rank and world size from torchrun's environment; a single process otherwise."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.started = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
                self.started = True
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.local_world))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def all_same(self, value):
        """Every rank's `value` (gathered), for cross-rank checks."""
        if self.world == 1:
            return [value]
        gathered = [None] * self.world
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def close(self):
        if self.started:
            torch.distributed.destroy_process_group()


def parameter_digest(model) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(getattr(model, "module", model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- one pass


def run_epoch(
    model, loader, config, labels, *, optimizer=None, epoch=0, steps_per_epoch=1, rank=0, bar=None, coulomb=None
):
    """One pass over `loader`: training if an optimiser is given, else evaluation. Returns metrics.

    With a Coulomb cache the targets are reference minus Coulomb (taken off before any rotation); force
    errors are the same as those of model + Coulomb against the reference."""
    core = getattr(model, "module", model)
    scale = core.force_scale
    metrics = ForceMetrics(labels)
    training = optimizer is not None
    model.train(training)
    rotations = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, rank) + 1)
    augment = training and (config.augment if config.augment is not None else not core.equivariant)
    grad = training or core.needs_grad
    for step, batch in enumerate(loader):
        if training:
            lr = learning_rate(config, epoch, step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
        if coulomb is not None:
            coulomb_forces, coulomb_energies = coulomb.for_batch(batch)
            batch.y = batch.y - coulomb_forces
            if getattr(batch, "energy", None) is not None:
                batch.energy = batch.energy - coulomb_energies
        if augment:
            batch = rotate_batch(batch, random_rotations(batch.num_graphs, rotations))
        with torch.set_grad_enabled(grad):
            out = model(batch)
            pred = out["forces"] / scale
            target = batch.y / scale
            loss = force_loss(config.loss, pred, target, config.huber_delta)
            energy = out.get("energy")
            atoms = None
            if energy is not None and getattr(batch, "energy", None) is not None:
                atoms = (
                    torch.bincount(batch.batch, minlength=batch.num_graphs)
                    if batch.batch is not None
                    else torch.tensor([batch.num_nodes])
                )
                if config.energy_weight > 0:
                    per_atom = (energy.double() - batch.energy.view(-1)) / atoms / scale.double()
                    loss = loss + config.energy_weight * force_loss(
                        config.loss, per_atom.float(), torch.zeros_like(per_atom.float()), config.huber_delta
                    )
            objective = loss
            if training and config.zero_penalty > 0 and epoch < config.warmup_epochs:
                objective = loss + config.zero_penalty * zero_penalty(pred)
        if training:
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
        metrics.update(
            out["forces"],
            batch.y,
            batch.atom_type,
            loss.item(),
            energy,
            getattr(batch, "energy", None) if energy is not None else None,
            atoms,
        )
        if bar is not None:
            bar.update(batch.num_graphs)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    metrics.all_reduce()
    return metrics.summary()


# ---------------------------------------------------------------- the run


def _prepare_run_dir(config: TrainConfig, dist: Distributed) -> Path:
    name = config.name or f"{config.model}-{Path(config.data).resolve().name}"
    run_dir = Path(config.runs_dir) / name
    if dist.main:
        if run_dir.exists() and not config.resume:
            if not config.overwrite:
                raise FileExistsError(f"{run_dir}: run directory exists; use --resume to continue it or --overwrite")
            shutil.rmtree(run_dir)
        if config.resume and not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: nothing to resume")
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    dist.barrier()
    return run_dir


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("epoch_*.pt"))
    return found[-1] if found else None


def _write_metrics(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def train(config: TrainConfig, *, stop_after: int | None = None) -> dict:
    """Train (or fine-tune, with config.init_from) and return the summary. `stop_after` ends the run
    after that many epochs as a kill would (no final checkpoint), for testing --resume."""
    config.check()
    dist = Distributed()
    try:
        return _train(config, dist, stop_after)
    finally:
        dist.close()


def _electrostatics(config: TrainConfig, frames, data_path: Path, dist: Distributed):
    """(Coulomb cache of every frame, PME settings for the checkpoint), or (None, None) without PME.

    `auto` means PME when the system has charges. The cache is computed once (rank 0 first, next to the
    dataset's frames.npz, so the other ranks and later runs read it) and the network learns the rest."""
    from gnnmd.models.electrostatics import Electrostatics, has_charges

    charged = has_charges(frames.topology)
    if config.electrostatics == "auto":
        config.electrostatics = "pme" if charged else "none"
    if config.electrostatics == "none":
        return None, None
    if not charged:
        raise ValueError(f"{data_path}: the system has no charges, so --electrostatics pme adds nothing; use none")
    electrostatics = Electrostatics.for_system(frames.topology, frames.mean_cell())
    directory = data_path if data_path.is_dir() else None
    cache = None
    if dist.main:
        cache = coulomb_cache(frames, directory, electrostatics, progress=config.progress)
    dist.barrier()
    if cache is None:
        cache = coulomb_cache(frames, directory, electrostatics, progress=False)
    return cache, electrostatics.config()


def _train(config: TrainConfig, dist: Distributed, stop_after: int | None) -> dict:
    started = time.time()
    data_path = Path(config.data)
    frames = choose_frames(load_frames(data_path), config.max_frames)
    if config.energy_weight > 0 and frames.energies is None:
        raise ValueError(f"{data_path}: has no energies, so --energy-weight must be 0")
    train_idx, val_idx = split_indices(frames, config.val_fraction, config.split_seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"{data_path}: {len(frames)} frames give an empty train or validation split")
    type_table = frames.topology.type_table()  # always the data's own table, also when fine-tuning
    labels = type_labels(type_table)
    coulomb, electrostatics = _electrostatics(config, frames, data_path, dist)
    normalisation = normalisation_from(frames, train_idx, coulomb)

    parent = None
    if config.init_from:
        model, parent_info = load_model(config.init_from)
        config.model = parent_info["family"]
        if float(config.cutoff) != float(parent_info["cutoff"]):
            if config.keep_normalisation:
                raise ValueError(
                    f"{config.init_from}: --keep-normalisation keeps the parent's neighbour count, which a new "
                    f"cutoff ({config.cutoff} A, parent {parent_info['cutoff']} A) changes; drop one of the two"
                )
            model = model.with_cutoff(config.cutoff)
        config.hyper = dict(model.hyper)
        parent = {
            "path": parent_info["path"],
            "sha256": file_sha256(config.init_from),
            "family": parent_info["family"],
            "gnnmd_version": parent_info["gnnmd_version"],
            "type_table": parent_info["type_table"],
            "normalisation": parent_info["normalisation"],
        }
        if config.keep_normalisation:
            normalisation = dict(parent_info["normalisation"])
        for group in config.freeze:
            for _, p in model.parameters_of(group):
                p.requires_grad_(False)
    else:
        if config.freeze:
            raise ValueError("--freeze only makes sense when fine-tuning from a checkpoint")
        hyper = dict(config.hyper)
        if float(hyper.get("cutoff", config.cutoff)) != float(config.cutoff):
            raise ValueError(f"set the cutoff with --cutoff ({config.cutoff} A), not --hyper cutoff={hyper['cutoff']}")
        hyper["cutoff"] = float(config.cutoff)
        torch.manual_seed(config.seed)
        model = build_model(config.model, **hyper)
        config.hyper = dict(model.hyper)
    model.set_normalisation(normalisation)
    if not (config.init_from and config.keep_normalisation):
        fitted = model.fit_priors(frames, coulomb=coulomb, indices=train_idx)  # nequip: per-type scales, walls
        if fitted is not None:
            normalisation["model_fit"] = fitted

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    run_dir = _prepare_run_dir(config, dist)

    # resume
    start_epoch, history = 0, []
    best = {"val_loss": math.inf, "epoch": None, "bad_epochs": 0}
    if config.resume:
        ckpt_path = latest_checkpoint(run_dir)
        if ckpt_path is None:
            raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no checkpoint to resume from")
        payload = read_checkpoint(ckpt_path)
        if payload.get("training") is None:
            raise ValueError(f"{ckpt_path}: holds no training state to resume")
        saved = dict(payload["config"])
        for key in (
            "model",
            "seed",
            "cutoff",
            "batch_size",
            "loss",
            "lr",
            "data",
            "max_frames",
            "val_fraction",
            "split_seed",
            "electrostatics",
        ):
            ours = getattr(config, key)
            ours = str(Path(ours).resolve()) if key == "data" else ours
            if saved.get(key) != ours:
                raise ValueError(f"{ckpt_path}: was made with {key}={saved.get(key)!r}, this run has {ours!r}")
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["training"]["optimizer"])
        start_epoch = payload["epoch"]
        history = payload["training"]["history"]
        best = payload["training"]["best"]

    resolved = asdict(config)
    resolved["data"] = str(data_path.resolve())
    resolved.update(
        frames=len(frames),
        train_frames=len(train_idx),
        val_frames=len(val_idx),
        atoms=frames.topology.n_atoms,
        normalisation=normalisation,
        type_table=type_table,
        world_size=dist.world,
        gnnmd_version=gnnmd.__version__,
        parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in trainable),
        parent=parent,
    )
    if dist.main:
        with open(run_dir / "config.json", "w") as handle:
            json.dump(resolved, handle, indent=2)

    probe = FrameDataset(frames, config.cutoff, train_idx[:1])[0]
    if probe.edge_index.shape[1] == 0:
        raise ValueError(
            f"{data_path}: no atom pairs closer than the cutoff {config.cutoff} A; the model would see nothing"
        )
    wrapped = dist.wrap(model)
    val_loader = make_loader(FrameDataset(frames, config.cutoff, val_idx[dist.rank :: dist.world]), config.batch_size)
    ckpt_common = dict(
        type_table=type_table,
        normalisation=normalisation,
        config=resolved,
        parent=parent,
        electrostatics=electrostatics,
    )

    def checkpoint(path, epoch, row, with_training):
        training = None
        if with_training:
            training = {"optimizer": optimizer.state_dict(), "history": history, "best": dict(best)}
        save_checkpoint(path, model, epoch=epoch, metrics=row, training=training, **ckpt_common)

    stopped_early = False
    epoch = start_epoch
    for epoch in range(start_epoch, config.epochs):
        if stop_after is not None and epoch >= stop_after:
            return {"stopped_after": epoch}
        epoch_start = time.time()
        torch.manual_seed(epoch_seed(config.seed, epoch, dist.rank))  # dropout
        order = rank_order(train_idx, config.seed, epoch, dist.rank, dist.world)
        loader = make_loader(FrameDataset(frames, config.cutoff, order), config.batch_size)
        steps = len(loader)
        bar = tqdm(
            total=len(order),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="frame",
            leave=False,
            disable=not (config.progress and dist.main),
        )
        train_m = run_epoch(
            wrapped,
            loader,
            config,
            labels,
            optimizer=optimizer,
            epoch=epoch,
            steps_per_epoch=steps,
            rank=dist.rank,
            bar=bar,
            coulomb=coulomb,
        )
        bar.close()
        # validate with the bare model: no gradient sync is wanted, and a grad-enabled forward through
        # DDP (energy models) without a backward would break the next training step
        val_m = run_epoch(model, val_loader, config, labels, epoch=epoch, rank=dist.rank, coulomb=coulomb)
        row = {"epoch": epoch + 1, "train_loss": train_m["loss"], "val_loss": val_m["loss"]}
        row.update({f"train_{k}": v for k, v in train_m.items() if k != "loss"})
        row.update({f"val_{k}": v for k, v in val_m.items() if k != "loss"})
        row["lr"] = learning_rate(config, epoch, steps - 1, steps)
        row["epoch_seconds"] = time.time() - epoch_start
        row["wall_seconds"] = (history[-1]["wall_seconds"] if history else 0.0) + row["epoch_seconds"]
        history.append(row)

        improved = val_m["loss"] < best["val_loss"]
        if improved:
            best.update(val_loss=val_m["loss"], epoch=epoch + 1, bad_epochs=0, val_force_mae=val_m["force_mae"])
        else:
            best["bad_epochs"] += 1
        stopped_early = best["bad_epochs"] >= config.patience
        out_of_time = config.max_minutes is not None and (time.time() - started) / 60 > config.max_minutes
        last = epoch + 1 == config.epochs or stopped_early or out_of_time
        if dist.world > 1:  # ranks' clocks differ: stop together or DDP would hang
            flag = torch.tensor([float(last)])
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            last = bool(flag.item())
        if dist.main:
            _write_metrics(run_dir / "metrics.csv", history)
            if improved:
                checkpoint(run_dir / "best.pt", epoch + 1, row, with_training=False)
            if (epoch + 1) % config.checkpoint_every == 0 or last:
                checkpoint(run_dir / "checkpoints" / f"epoch_{epoch + 1:04d}.pt", epoch + 1, row, with_training=True)
            (
                tqdm.write(
                    f"epoch {epoch + 1}: train loss {train_m['loss']:.4f} val loss {val_m['loss']:.4f} "
                    f"val force MAE {val_m['force_mae']:.3f} kcal/mol/A ({row['epoch_seconds']:.0f} s)"
                )
                if config.progress
                else None
            )
        if last:
            break

    digests = dist.all_same(parameter_digest(model))
    if dist.world > 1 and len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
    final = history[-1] if history else {}
    summary = {
        "run_dir": str(run_dir),
        "model": config.model,
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "best_val_loss": best["val_loss"],
        "best_val_force_mae": best.get("val_force_mae"),
        "final_val_force_mae": final.get("val_force_mae"),
        "stopped_early": stopped_early,
        "minutes": (final.get("wall_seconds") or 0.0) / 60,
        "world_size": dist.world,
        "rank_param_sha256": digests,
    }
    if dist.main:
        line = (
            f"{config.model} on {data_path} ({len(train_idx)} train / {len(val_idx)} val frames, cutoff "
            f"{config.cutoff} A): best epoch {best['epoch']} of {len(history)}, val force MAE "
            f"{best.get('val_force_mae', math.nan):.3f} kcal/mol/A, {summary['minutes']:.1f} min"
            + (", stopped early" if stopped_early else "")
        )
        (run_dir / "summary.txt").write_text(line + "\n")
        with open(run_dir / "summary.json", "w") as handle:
            json.dump(summary, handle, indent=2)
        summary["line"] = line
    return summary
