"""One pass over the data: the learning-rate schedule, the losses, the seeded per-epoch order, and
`run_epoch` (training with an optimiser, evaluation without).

Every random choice in an epoch (shuffle order, rotations, dropout) is seeded from (seed, epoch, rank),
and the learning rate is a function of (epoch, step): a run resumed from a checkpoint replays exactly
what the uninterrupted run would have done."""

from __future__ import annotations

import numpy as np
import torch

from gnnmd.inference.metrics import ForceMetrics
from gnnmd.train.augment import random_rotations, rotate_batch
from gnnmd.train.config import TrainConfig
from gnnmd.units import VOIGT_COLUMNS, VOIGT_ROWS


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


def _subtract_coulomb(batch, coulomb):
    """Targets minus the cached Coulomb forces (and energies, and virials), taken off before any rotation."""
    coulomb_forces, coulomb_energies = coulomb.for_batch(batch)
    batch.y = batch.y - coulomb_forces
    if getattr(batch, "energy", None) is not None:
        batch.energy = batch.energy - coulomb_energies
    if getattr(batch, "virial", None) is not None:
        batch.virial = batch.virial - coulomb.virials_for_batch(batch)
    return batch


def _atoms_per_graph(batch):
    if batch.batch is not None:
        return torch.bincount(batch.batch, minlength=batch.num_graphs)
    return torch.tensor([batch.num_nodes], device=batch.pos.device)


def batch_loss(out, batch, config: TrainConfig, scale, *, penalise: bool):
    """(loss, objective, atoms per graph or None) of one batch. The loss is on forces in units of the force
    RMS, plus the weighted per-atom energy loss and the weighted per-atom virial loss (stress_weight, its
    six components in the same units); the objective adds the warm-up zero penalty if `penalise`."""
    pred = out["forces"] / scale
    target = batch.y / scale
    loss = force_loss(config.loss, pred, target, config.huber_delta)
    energy, virial = out.get("energy"), out.get("virial")
    has_energy = energy is not None and getattr(batch, "energy", None) is not None
    has_virial = virial is not None and getattr(batch, "virial", None) is not None
    atoms = _atoms_per_graph(batch) if has_energy or has_virial else None
    if has_energy and config.energy_weight > 0:
        per_atom = (energy.double() - batch.energy.view(-1)) / atoms / scale.double()
        loss = loss + config.energy_weight * _loss_to_zero(config, per_atom)
    if has_virial and config.stress_weight > 0:
        error = (virial.double() - batch.virial.double())[:, VOIGT_ROWS, VOIGT_COLUMNS]
        loss = loss + config.stress_weight * _loss_to_zero(config, error / atoms[:, None] / scale.double())
    objective = loss
    if penalise:
        objective = loss + config.zero_penalty * zero_penalty(pred)
    return loss, objective, atoms


def _loss_to_zero(config: TrainConfig, error):
    """The force loss's kind applied to an error (per-atom energy or virial, in units of the force RMS)."""
    error = error.float()
    return force_loss(config.loss, error, torch.zeros_like(error), config.huber_delta)


def run_epoch(
    model, loader, config, labels, *, optimizer=None, epoch=0, steps_per_epoch=1, rank=0, bar=None, coulomb=None,
    virials=None,
):  # fmt: skip
    """One pass over `loader`: training if an optimiser is given, else evaluation. Returns metrics.

    With a Coulomb cache the targets are reference minus Coulomb (taken off before any rotation); force
    errors are the same as those of model + Coulomb against the reference. With reference virials
    (gnnmd.data.ReferenceVirials) the model also gives its virial, for the stress term and the metrics;
    without them none is computed."""
    core = getattr(model, "module", model)
    scale = core.force_scale
    metrics = ForceMetrics(labels)
    training = optimizer is not None
    model.train(training)
    rotations = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, rank) + 1)
    augment = training and (config.augment if config.augment is not None else not core.equivariant)
    grad = training or core.needs_grad
    penalise = training and config.zero_penalty > 0 and epoch < config.warmup_epochs
    device = scale.device
    for step, batch in enumerate(loader):
        batch = batch.to(device)  # the model's device (no copy on the CPU)
        if training:
            lr = learning_rate(config, epoch, step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
        if virials is not None:
            batch.virial = virials.for_batch(batch)
        if coulomb is not None:
            batch = _subtract_coulomb(batch, coulomb)
        if augment:
            batch = rotate_batch(batch, random_rotations(batch.num_graphs, rotations).to(device))
        with torch.set_grad_enabled(grad):
            out = model(batch, virial=True) if virials is not None else model(batch)
            loss, objective, atoms = batch_loss(out, batch, config, scale, penalise=penalise)
        if training:
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
        energy = out.get("energy")
        reference_energy = getattr(batch, "energy", None) if energy is not None else None
        metrics.update(out["forces"], batch.y, batch.atom_type, loss.item(), energy, reference_energy, atoms,
                       out.get("virial"), getattr(batch, "virial", None))  # fmt: skip
        if bar is not None:
            bar.update(batch.num_graphs)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    metrics.all_reduce()
    return metrics.summary()
