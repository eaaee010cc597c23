"""The training run shared by `gnnmd train` and `gnnmd finetune`: set-up (gnnmd.train.setup), the epoch
loop with early stopping and checkpoints, and the summary. One pass over the data is
gnnmd.train.loop.run_epoch; data parallelism (torchrun) is gnnmd.train.distributed."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from gnnmd.data import FrameDataset, make_loader
from gnnmd.files import atomic_write, atomic_write_text
from gnnmd.models.checkpoint import save_checkpoint
from gnnmd.progress import hidden
from gnnmd.train.config import ELECTROSTATICS, LOSSES, TrainConfig
from gnnmd.train.distributed import Distributed, parameter_digest
from gnnmd.train.loop import epoch_seed, learning_rate, rank_order, run_epoch
from gnnmd.train.run_folder import RunFolder
from gnnmd.train.setup import (
    RunData,
    TrainingState,
    check_cutoff,
    check_prior,
    coulomb_for,
    load_data,
    normalisation_from,
    prepare_model,
    prepare_run_dir,
    resolve_electrostatics,
    resolved_config,
    resume_state,
)

__all__ = ["ELECTROSTATICS", "LOSSES", "TrainConfig", "train"]


@dataclass
class Run:
    """A run once set up: its resolved config, data, model, optimiser and loop state."""

    config: TrainConfig
    dist: Distributed
    data: RunData
    folder: RunFolder
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    coulomb: object
    state: TrainingState
    checkpoint_info: dict  # type_table, normalisation, config, parent, electrostatics, force_field, prior
    started: float

    @property
    def run_dir(self) -> Path:
        """Where the run writes now (beside the old run while replacing it)."""
        return self.folder.path


def train(config: TrainConfig, *, stop_after: int | None = None) -> dict:
    """Train (or fine-tune, with config.init_from) and return the summary. `stop_after` ends the run
    after that many epochs as a kill would (no final checkpoint), for testing --resume."""
    config.check()
    dist = Distributed(config.device)
    try:
        return _train(config, dist, stop_after)
    finally:
        dist.close()


def _train(config: TrainConfig, dist: Distributed, stop_after: int | None) -> dict:
    run = _set_up(config, dist)
    try:
        stopped_early, killed_at = _epoch_loop(run, stop_after)
        if killed_at is not None:
            return {"stopped_after": killed_at}
        summary = _summary(run, stopped_early)
        if dist.main:
            run.folder.finish()  # a replaced run goes only now, with the new one complete
        dist.barrier()
        return summary
    finally:
        run.folder.close()


def _set_up(config: TrainConfig, dist: Distributed) -> Run:
    """Data, Coulomb cache, normalisation, model, run directory, resume state; writes config.json."""
    started = time.time()
    data = load_data(config)
    config = resolve_electrostatics(config, data.frames)
    check_prior(config, data)
    coulomb, electrostatics = coulomb_for(config, data, dist)
    normalisation = normalisation_from(data.frames, data.train_idx, coulomb)
    model, config, normalisation, parent = prepare_model(config, data, coulomb, normalisation)
    model = model.to(dist.device)  # priors were fitted on the CPU; the optimiser takes the moved weights
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    check_cutoff(config, data)
    folder = prepare_run_dir(config, dist)  # the first write: everything above is checked
    try:
        state = resume_state(config, folder.path, model, optimizer)
    except BaseException:
        folder.close()
        raise
    resolved = resolved_config(config, data, model, normalisation, parent, dist.world)
    if dist.main:
        atomic_write_text(folder.path / "config.json", json.dumps(resolved, indent=2))
    info = dict(
        type_table=data.type_table,
        normalisation=normalisation,
        config=resolved,
        parent=parent,
        electrostatics=electrostatics,
        force_field=data.force_field.to_dict() if data.force_field is not None else None,
        prior=data.prior,
    )
    return Run(config, dist, data, folder, model, optimizer, coulomb, state, info, started)


# ---------------------------------------------------------------- the epochs


def _epoch_loop(run: Run, stop_after: int | None) -> tuple[bool, int | None]:
    """Train until the last epoch, early stopping or max_minutes: (stopped early, None), or
    (False, epoch) where `stop_after` ended the run as a kill would."""
    config, dist, data = run.config, run.dist, run.data
    wrapped = dist.wrap(run.model)
    val_set = FrameDataset(data.frames, config.cutoff, data.val_idx[dist.rank :: dist.world])
    val_loader = make_loader(val_set, config.batch_size)
    stopped_early = False
    for epoch in range(run.state.start_epoch, config.epochs):
        if stop_after is not None and epoch >= stop_after:
            return False, epoch
        row = _one_epoch(run, wrapped, val_loader, epoch)
        run.state.history.append(row)
        improved = _update_best(run.state.best, row, epoch)
        stopped_early = run.state.best["bad_epochs"] >= config.patience
        out_of_time = config.max_minutes is not None and (time.time() - run.started) / 60 > config.max_minutes
        last = dist.any(epoch + 1 == config.epochs or stopped_early or out_of_time)
        if dist.main:
            _save_epoch(run, epoch, row, improved, last)
        if last:
            break
    return stopped_early, None


def _one_epoch(run: Run, wrapped, val_loader, epoch: int) -> dict:
    """Train one epoch on this rank's frames, validate; the metrics row."""
    config, dist, data = run.config, run.dist, run.data
    epoch_start = time.time()
    torch.manual_seed(epoch_seed(config.seed, epoch, dist.rank))  # dropout
    order = rank_order(data.train_idx, config.seed, epoch, dist.rank, dist.world)
    loader = make_loader(FrameDataset(data.frames, config.cutoff, order), config.batch_size)
    steps = len(loader)
    bar = tqdm(
        total=len(order),
        desc=f"epoch {epoch + 1}/{config.epochs}",
        unit="frame",
        leave=False,
        disable=hidden(config.progress and dist.main),
    )
    common = dict(epoch=epoch, rank=dist.rank, coulomb=run.coulomb, virials=data.virials)
    train_m = run_epoch(
        wrapped, loader, config, data.labels, optimizer=run.optimizer, steps_per_epoch=steps, bar=bar, **common
    )
    bar.close()
    # validate with the bare model: no gradient sync is wanted, and a grad-enabled forward through
    # DDP (energy models) without a backward would break the next training step
    val_m = run_epoch(run.model, val_loader, config, data.labels, **common)
    row = {"epoch": epoch + 1, "train_loss": train_m["loss"], "val_loss": val_m["loss"]}
    row.update({f"train_{k}": v for k, v in train_m.items() if k != "loss"})
    row.update({f"val_{k}": v for k, v in val_m.items() if k != "loss"})
    row["lr"] = learning_rate(config, epoch, steps - 1, steps)
    row["epoch_seconds"] = time.time() - epoch_start
    history = run.state.history
    row["wall_seconds"] = (history[-1]["wall_seconds"] if history else 0.0) + row["epoch_seconds"]
    return row


def _update_best(best: dict, row: dict, epoch: int) -> bool:
    """Early-stopping bookkeeping: record an improved validation loss, else count a bad epoch."""
    improved = row["val_loss"] < best["val_loss"]
    if improved:
        best.update(val_loss=row["val_loss"], epoch=epoch + 1, bad_epochs=0, val_force_mae=row["val_force_mae"])
        if "val_virial_mae_per_atom" in row:
            best["val_virial_mae_per_atom"] = row["val_virial_mae_per_atom"]
    else:
        best["bad_epochs"] += 1
    return improved


def _save_epoch(run: Run, epoch: int, row: dict, improved: bool, last: bool) -> None:
    """metrics.csv, best.pt when improved, a resumable checkpoint every checkpoint_every epochs and at the end."""
    _write_metrics(run.run_dir / "metrics.csv", run.state.history)
    if improved:
        _checkpoint(run, run.run_dir / "best.pt", epoch + 1, row, with_training=False)
    if (epoch + 1) % run.config.checkpoint_every == 0 or last:
        path = run.run_dir / "checkpoints" / f"epoch_{epoch + 1:04d}.pt"
        _checkpoint(run, path, epoch + 1, row, with_training=True)
    virial = row.get("val_virial_mae_per_atom")
    line = (
        f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} val loss {row['val_loss']:.4f} "
        f"val force MAE {row['val_force_mae']:.3f} kcal/mol/A"
        + (f", virial MAE {virial:.4f} kcal/mol per atom" if virial is not None else "")
        + f" ({row['epoch_seconds']:.0f} s)"
    )
    with open(run.run_dir / "train.log", "a") as log:  # the run's own log, whatever the terminal shows
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    if not run.config.quiet:
        tqdm.write(line)
    if run.config.tensorboard:
        _tensorboard(run.run_dir / "tensorboard", row, epoch + 1)


def _tensorboard(folder: Path, row: dict, epoch: int) -> None:
    """The epoch's metrics (metrics.csv's numbers) as TensorBoard scalars, train/ and val/ grouped."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # checked before training by TrainConfig.check; a lost install still says so
        raise RuntimeError("--tensorboard needs the tensorboard package (pip install tensorboard)") from err
    with SummaryWriter(str(folder)) as writer:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(key.replace("train_", "train/", 1).replace("val_", "val/", 1), value, epoch)


def _checkpoint(run: Run, path: Path, epoch: int, row: dict, with_training: bool) -> None:
    training = None
    if with_training:
        state = run.state
        training = {"optimizer": run.optimizer.state_dict(), "history": state.history, "best": dict(state.best)}
    save_checkpoint(path, run.model, epoch=epoch, metrics=row, training=training, **run.checkpoint_info)


def _write_metrics(path: Path, rows: list[dict]) -> None:
    if not rows:
        return

    def write(handle):
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write, mode="w")


# ---------------------------------------------------------------- the end


def _summary(run: Run, stopped_early: bool) -> dict:
    """The run's summary (every rank's weights checked equal); rank 0 writes summary.json and .txt."""
    config, dist, best = run.config, run.dist, run.state.best
    history = run.state.history
    digests = dist.all_same(parameter_digest(run.model))
    if dist.world > 1 and len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
    final = history[-1] if history else {}
    summary = {
        "run_dir": str(run.folder.final),
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
    if "val_virial_mae_per_atom" in final:  # a stress term: kcal/mol per atom
        summary["best_val_virial_mae_per_atom"] = best.get("val_virial_mae_per_atom")
        summary["final_val_virial_mae_per_atom"] = final["val_virial_mae_per_atom"]
    if dist.main:
        data = run.data
        virial = summary.get("best_val_virial_mae_per_atom")
        line = (
            f"{config.model} on {data.path} ({len(data.train_idx)} train / {len(data.val_idx)} val frames, cutoff "
            f"{config.cutoff} A): best epoch {best['epoch']} of {len(history)}, val force MAE "
            f"{best.get('val_force_mae', math.nan):.3f} kcal/mol/A"
            + (f", virial MAE {virial:.4f} kcal/mol per atom" if virial is not None else "")
            + f", {summary['minutes']:.1f} min"
            + (", stopped early" if stopped_early else "")
        )
        atomic_write_text(run.run_dir / "summary.txt", line + "\n")
        atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2))
        summary["line"] = line
    return summary
