"""Model families. Each is a `ForceModel` (see layers.py for the conventions); `build_model` makes one
from its family name and keyword hyper-parameters, which is how checkpoints rebuild them."""

from __future__ import annotations

from gnnmd.models.base import ForceModel
from gnnmd.models.eqforce import EqForce
from gnnmd.models.mpnn import MPNN
from gnnmd.models.nequip import NequIP
from gnnmd.models.states import StatesNequIP

MODELS: dict[str, type[ForceModel]] = {"mpnn": MPNN, "eqforce": EqForce, "nequip": NequIP, "csnequip": StatesNequIP}


def build_model(family: str, **hyper) -> ForceModel:
    """A new model of `family`; any error of its constructor (an unknown name, a negative size, ...) is a
    ValueError naming the family and the hyper-parameters given."""
    if family not in MODELS:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[family](**hyper)
    except (TypeError, ValueError, RuntimeError) as err:
        given = ", ".join(f"{name}={value!r}" for name, value in hyper.items()) or "none given"
        raise ValueError(f"bad hyper-parameters (--hyper) for {family} ({given}): {err}") from err


__all__ = ["MODELS", "EqForce", "ForceModel", "MPNN", "NequIP", "StatesNequIP", "build_model"]
