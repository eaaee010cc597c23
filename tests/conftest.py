"""Shared fixtures: tiny datasets made by real LAMMPS runs (a few dozen molecules, tens of steps)."""

from __future__ import annotations

import numpy as np
import pytest

from gnnmd.data import load_frames
from gnnmd.lammps.generate import generate, protocol_for
from gnnmd.models import build_model
from gnnmd.models.checkpoint import save_checkpoint


@pytest.fixture(scope="session")
def water_run(tmp_path_factory):
    """32 SPC/Fw molecules, 2 segments x 6 frames, 10 steps apart, after 40 steps of equilibration."""
    out = tmp_path_factory.mktemp("water") / "run"
    protocol = protocol_for("water", count=32, segments=2, frames=12, stride=10, equil_steps=40, seed=7)
    generate(protocol, out, threads=1, progress=False)
    return out


@pytest.fixture(scope="session")
def argon_run(tmp_path_factory):
    """64 argon atoms, 5 frames 20 steps apart after 200 steps of heating."""
    out = tmp_path_factory.mktemp("argon") / "run"
    protocol = protocol_for("argon", count=64, frames=5, stride=20, equil_steps=200, seed=11)
    generate(protocol, out, threads=1, progress=False)
    return out


@pytest.fixture(scope="session")
def argon_model(argon_run, tmp_path_factory):
    """An untrained eqforce model for argon with forces of argon's size: MD with it does not blow up."""
    frames = load_frames(argon_run)
    model = build_model("eqforce", cutoff=6.0, hidden=16, layers=2, radial=8)
    path = tmp_path_factory.mktemp("model") / "argon.pt"
    rms = float(np.sqrt((frames.forces**2).mean()))
    save_checkpoint(path, model, type_table=frames.topology.type_table(), normalisation={"force_scale": rms})
    return path
