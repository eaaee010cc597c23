"""`gnnmd walls`: refit an energy model's walls from its training data into a new checkpoint (the
network and its normalisation stay as they are; see gnnmd.models.priors)."""

from __future__ import annotations

from pathlib import Path

from gnnmd.data import load_frames
from gnnmd.files import file_sha256
from gnnmd.models.checkpoint import load_model, save_checkpoint
from gnnmd.models.nequip import NequIP


def refit_walls(model_path, data, out, strength=None, margin=None, overwrite: bool = False) -> dict:
    """Write `out`: the checkpoint at `model_path` with walls fitted on the frames of `data`; returns the
    new strength, margin and radii."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    model, info = load_model(model_path)
    if not isinstance(model, NequIP):
        raise ValueError(f"{model_path}: holds a {info.family!r} model; walls belong to nequip and csnequip")
    walls = model.fit_walls(load_frames(data), strength, margin)
    normalisation = dict(info.normalisation)
    normalisation["walls"] = {
        "refit_from": str(model_path),
        "refit_from_sha256": file_sha256(model_path),
        "data": str(data),
        "strength": model.core_strength,
        "margin": model.core_margin,
        **walls,
    }
    save_checkpoint(out, model, **{**info.saved(), "normalisation": normalisation})
    n = int(model.n_types)
    radii = {"core": model.core_radius[:n, :n].tolist(), "stretch": model.stretch_radius[:n, :n].tolist()}
    return {"out": str(out), "strength": model.core_strength, "margin": model.core_margin, **radii}
