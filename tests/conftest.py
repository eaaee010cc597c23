"""Shared fixtures: tiny datasets made by real LAMMPS runs (a few dozen molecules, tens of steps)."""

from __future__ import annotations

import pytest

from gnnmd.lammps.generate import generate, protocol_for


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
