"""Zero-shot transfer by corresponding states: the shipped corresponding-states model, trained on water
only, predicts the forces of Lennard-Jones liquids it never saw, made here by LAMMPS and read in with
`gnnmd import`: one species with parameters neither water nor argon has (eps 0.3 kcal/mol, sigma 3.0 A),
and a 50/50 mixture where Lorentz-Berthelot mixing decides the cross pair. Its force MAE must stay below
15% of the liquid's mean |F| (issue: zero-shot transfer)."""

from __future__ import annotations

import json
import os

import pytest

from gnnmd.cli import main
from gnnmd.lammps.liquids import lennard_jones_liquid

MODEL = os.environ.get("GNNMD_ZERO_SHOT_MODEL", "benchmarks/models/csnequip-pme-water/best.pt")
LIQUIDS = {  # name: ((eps, sigma) per type, temperature K, fcc lattice constant A)
    "eps0.3-sigma3.0": ([(0.3, 3.0)], 113.0, 5.04),
    "mixture": ([(0.3, 3.0), (0.2, 3.6)], 100.0, 5.55),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LIQUIDS))
def test_water_model_predicts_an_unseen_lennard_jones_liquid(name, tmp_path):
    data_file, dump = lennard_jones_liquid(tmp_path / "lammps", *LIQUIDS[name])
    dataset = tmp_path / "liquid"
    assert main(["import", "--data", str(data_file), "--dump", str(dump), "--out", str(dataset)]) == 0
    result = tmp_path / "eval.json"
    args = ["evaluate", "--model", MODEL, "--data", str(dataset), "--out", str(result), "--allow-unknown-types"]
    assert main([*args, "--no-progress"]) == 0
    report = json.loads(result.read_text())
    mae, mean_force = report["force_mae"], report["mean_abs_force"]
    assert mean_force > 0.3  # a liquid's forces, not a gas's
    assert mae < 0.15 * mean_force, (mae, mean_force)
