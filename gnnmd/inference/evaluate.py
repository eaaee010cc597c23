"""Force errors of a trained model on a dataset: MAE/RMSE overall, per component and per atom type,
relative to the mean |F component|, and throughput. Works on any system: node features are physical
parameters, so the data's own type table is used (zero-shot argon is just another dataset)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gnnmd.data import FrameDataset, load_frames, make_loader, run_split
from gnnmd.devices import resolve_device
from gnnmd.files import atomic_write_text
from gnnmd.inference.forces import ModelForces, check_types_known, with_coulomb
from gnnmd.inference.metrics import COMPONENTS, ForceMetrics, type_labels
from gnnmd.models.checkpoint import load_model
from gnnmd.progress import hidden
from gnnmd.units import NKTV2P_REAL, VOIGT_COLUMNS, VOIGT_ROWS


def evaluate_model(model, frames, cutoff: float, indices=None, batch_size: int = 1, progress: bool = True) -> dict:
    # `cutoff`: the graphs' (the model's own, or that of the model inside a WithCoulomb wrapper)
    """Metrics dict plus `pred`, `ref` (M, 3) and `atom_type` (M,) arrays for a parity plot."""
    table = frames.topology.type_table()
    labels = type_labels(table)
    dataset = FrameDataset(frames, cutoff, indices)
    metrics = ForceMetrics(labels)
    model.eval()
    device = next(model.buffers()).device  # every family has buffers (force_scale)
    preds, refs, types, per_atom = [], [], [], []  # per_atom: energy errors per atom of each frame
    model_seconds = 0.0
    started = time.time()
    for batch in tqdm(
        make_loader(dataset, batch_size), desc="evaluate", unit="batch", disable=hidden(progress), leave=False
    ):
        tick = time.perf_counter()
        batch = batch.to(device)
        with torch.enable_grad() if model.needs_grad else torch.no_grad():
            out = model(batch)
        forces = out["forces"].detach().cpu()
        model_seconds += time.perf_counter() - tick
        batch = batch.cpu()
        energy, reference = out.get("energy"), getattr(batch, "energy", None)
        if energy is None or reference is None:
            metrics.update(forces, batch.y, batch.atom_type)
        else:
            atoms = torch.bincount(batch.batch) if getattr(batch, "batch", None) is not None else None
            atoms = torch.tensor([batch.num_nodes]) if atoms is None else atoms
            metrics.update(forces, batch.y, batch.atom_type, None, energy.detach().cpu(), reference.view(-1), atoms)
            per_atom.append(((energy.detach().cpu().double() - reference.view(-1).double()) / atoms).numpy())
        preds.append(forces.numpy())
        refs.append(batch.y.numpy())
        types.append(batch.atom_type.numpy())
    wall = time.time() - started
    result = metrics.summary()
    result.pop("loss", None)
    # energies: per atom, where the model predicts them (energy models) and the data has them
    result["energy"] = _energy_note(model, frames, result)
    if per_atom:  # a model trained on forces alone has an arbitrary energy zero: the error about it too
        errors = np.concatenate(per_atom)
        result["energy_offset_per_atom"] = float(errors.mean())
        result["energy_mae_per_atom_about_offset"] = float(np.abs(errors - errors.mean()).mean())
    n_frames = len(dataset)
    atoms = n_frames * frames.topology.n_atoms
    result.update(
        relative_force_mae=result["force_mae"] / result["mean_abs_force"],
        frames=n_frames,
        atoms_per_frame=frames.topology.n_atoms,
        model_seconds=model_seconds,
        wall_seconds=wall,
        atoms_per_second_model=atoms / model_seconds if model_seconds else float("nan"),
        frames_per_second_with_graphs=n_frames / wall if wall else float("nan"),
        type_labels=labels,
    )
    result["pred"] = np.concatenate(preds)
    result["ref"] = np.concatenate(refs)
    result["atom_type"] = np.concatenate(types)
    return result


def _energy_note(model, frames, result: dict) -> str:
    """What the energy columns hold: "evaluated", or why there are none."""
    if "energy_mae_per_atom" in result:
        return "evaluated"
    if not getattr(model, "needs_grad", False):
        return "not predicted (a direct-force model)"
    return "not evaluated (the data has no energies)" if frames.energies is None else "not evaluated"


def select_frames(frames, info: dict, split: str):
    """Frame indices for `split`: all, or the train/val split the checkpoint's run used (same data)."""
    if split == "all":
        return None
    config = info.config or {}
    if "frames" not in config:
        raise ValueError(f"{info.path}: records no training run, so it has no {split} split; use --split all")
    frames, train_idx, val_idx = run_split(
        frames, config.get("max_frames"), config.get("val_fraction", 0.1), config.get("split_seed", 0)
    )
    same = (len(frames), frames.topology.n_atoms, frames.topology.type_table()) == (
        config["frames"],
        config.get("atoms"),
        config.get("type_table"),
    )
    if not same:
        raise ValueError(
            f"{info.path}: was trained on {config.get('data')} ({config['frames']} frames of {config.get('atoms')} "
            f"atoms), not on this data ({len(frames)} frames of {frames.topology.n_atoms} atoms); its {split} split "
            "exists only there: use --split all"
        )
    return frames, (train_idx if split == "train" else val_idx)


def save_evaluation(result: dict, path) -> Path:
    """The metrics as JSON (NaN written as null), atomically."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}
    return atomic_write_text(path, json.dumps(clean, indent=2))


def format_table(result: dict, title: str) -> str:
    rows = [("all", result["force_mae"], result["force_rmse"])]
    rows += [(c, result[f"force_mae_{c}"], result[f"force_rmse_{c}"]) for c in COMPONENTS]
    rows += [(t, result[f"force_mae_{t}"], result[f"force_rmse_{t}"]) for t in result["type_labels"]]
    lines = [title, f"{'':8s}{'MAE':>10s}{'RMSE':>10s}   kcal/mol/A"]
    lines += [f"{name:8s}{mae:10.3f}{rmse:10.3f}" for name, mae, rmse in rows]
    if "energy_mae_per_atom" in result:
        mae, rmse = result["energy_mae_per_atom"], result["energy_rmse_per_atom"]
        lines.append(
            f"{'E/atom':8s}{mae:10.4f}{rmse:10.4f}   kcal/mol per atom (mean offset "
            f"{result['energy_offset_per_atom']:.4f}; MAE about it {result['energy_mae_per_atom_about_offset']:.4f})"
        )
    else:
        lines.append(f"energy: {result.get('energy', 'not evaluated')}")
    lines.append(
        f"mean |F component| {result['mean_abs_force']:.3f}; relative MAE {result['relative_force_mae']:.3f}; "
        f"{result['frames']} frames of {result['atoms_per_frame']} atoms; "
        f"{result['atoms_per_second_model']:.0f} atoms/s (model), {result['frames_per_second_with_graphs']:.2f} frames/s (with graphs)"
    )
    return "\n".join(lines)


def evaluate_checkpoint(model_path, data_path, split: str = "all", batch_size: int = 1, progress: bool = True,
                        device: str = "cpu", allow_unknown_types: bool = False):  # fmt: skip
    """Errors of a checkpoint on a dataset (all of it, or the val/train split of its own run), computed
    on `device` (gnnmd.devices). A system with atom types the model was not trained on is refused, as
    gnnmd md refuses it (check_types_known), unless `allow_unknown_types` (zero-shot transfer)."""
    model, info = load_model(model_path)
    frames = load_frames(Path(data_path))
    indices = None
    if split != "all":
        frames, indices = select_frames(frames, info, split)
    if not allow_unknown_types:
        check_types_known(frames.topology, info.type_table, str(model_path), str(data_path))
    model.check_system(frames.topology, f"{model_path} on {data_path}: ")
    cutoff = model.cutoff
    model = with_coulomb(model, info.electrostatics, frames.topology, frames.mean_cell())
    model = model.to(resolve_device(device))
    result = evaluate_model(model, frames, cutoff, indices, batch_size, progress)
    result.update(
        model=str(model_path),
        data=str(Path(data_path).resolve()),
        split=split,
        family=info.family,
        cutoff=cutoff,
    )
    return result, info


def model_virials(model_path, frames, indices=None, lj_tail: float | None = None,
                  allow_unknown_types: bool = False) -> np.ndarray:  # fmt: skip
    """The virial (M, 3, 3, kcal/mol) an energy model gives the frames `indices` (all by default): that
    of ModelForces (the learned part plus, for a PME-trained model, the Coulomb part), plus the mean-field
    Lennard-Jones between the model's cutoff and `lj_tail` (A) if given (gnnmd.inference.lj_tail)."""
    from gnnmd.inference.lj_tail import for_model

    forces_of = ModelForces(model_path, frames.topology, allow_unknown_types=allow_unknown_types, skin=0.0)
    if not forces_of.supports_virial:
        raise ValueError(f"{model_path}: a {forces_of.info.family} model has no energy, so no virial")
    forces_of.virial = True
    forces_of.prepare(frames.mean_cell())  # the PME mesh of the whole dataset, as evaluation uses
    tail = None if lj_tail is None else for_model(forces_of.info, frames.topology, lj_tail)
    out = []
    for k in range(len(frames)) if indices is None else indices:
        positions, cell = frames.positions[k].astype(np.float64), frames.cells[k].astype(np.float64)
        forces_of(positions, cell)
        virial = forces_of.last_virial
        if tail is not None:
            virial = virial + tail.virial(abs(float(np.linalg.det(cell))))
        out.append(virial)
    return np.array(out)


def virial_errors(predicted: np.ndarray, reference: np.ndarray, frames, indices=None) -> dict:
    """Virial MAE per atom (kcal/mol, over the six components) and the matching pressure MAE (atm)."""
    n_atoms = frames.topology.n_atoms
    volumes = np.abs(np.linalg.det(frames.cells[indices if indices is not None else slice(None)].astype(np.float64)))
    rows, cols = VOIGT_ROWS, VOIGT_COLUMNS
    error = (predicted - reference)[:, rows, cols]
    return {
        "virial_mae_per_atom": float(np.abs(error).mean() / n_atoms),
        "pressure_mae_atm": float((np.abs(error) / volumes[:, None]).mean() * NKTV2P_REAL),
        # the mean error of the pressure itself (trace / 3V): a bias, such as interactions beyond the cutoff
        "pressure_bias_atm": float((error[:, :3].mean(axis=1) / volumes).mean() * NKTV2P_REAL),
        "mean_abs_pressure_atm": float((np.abs(reference[:, rows, cols]) / volumes[:, None]).mean() * NKTV2P_REAL),
        "frames": int(len(predicted)),
    }
