"""The README's "Bring your own data" and "From ASE" examples run as they are written, in a folder that
holds the files they name (a LAMMPS run, an extxyz, a model and a dataset)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np

from gnnmd.cli import main
from gnnmd.data import load_frames
from gnnmd.lammps.md_reference import run_lammps_md
from gnnmd.lammps.md_settings import MDSettings

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(section: str, language: str) -> str:
    text = README.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", text, re.S).group(1)


def test_readme_examples_run(water_run, tmp_path, monkeypatch):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    monkeypatch.chdir(tmp_path)
    data_file = water_run / "segment_000" / "system.data"
    shutil.copyfile(data_file, "system.data")
    run_lammps_md(data_file, "spcfw.ff", MDSettings(6, temperature=300.0, dump_every=2), tmp_path / "run")
    shutil.copyfile(tmp_path / "run" / "trajectory.lammpstrj", "run.lammpstrj")
    shutil.copyfile(tmp_path / "run" / "log.lammps", "log.lammps")
    frames = load_frames(water_run)
    names = list(np.asarray(frames.topology.table_names)[frames.topology.types])
    images = [Atoms(names, positions=frames.positions[k], cell=frames.cells[k], pbc=True) for k in range(2)]
    for k, atoms in enumerate(images):
        atoms.calc = SinglePointCalculator(atoms, energy=float(frames.energies[k]), forces=frames.forces[k])
    write("traj.xyz", images, format="extxyz")
    write("frame.xyz", images[0], format="extxyz")
    for line in _block("Bring your own data", "bash").splitlines():
        if line.startswith("gnnmd "):
            assert main(shlex.split(line)[1:]) == 0, line
    assert len(load_frames("data/mine")) == 4 and len(load_frames("data/mine-xyz")) == 2
    os.makedirs("data", exist_ok=True)
    shutil.copytree(water_run, "data/water")
    args = ["train", "--data", "data/water", "--model", "nequip", "--hyper", "channels=4", "--hyper", "layers=1"]
    assert main([*args, "--cutoff", "3.0", "--epochs", "1", "--name", "nequip-water", "--quiet"]) == 0
    namespace: dict = {}
    exec(_block("From ASE", "python"), namespace)  # noqa: S102 - the README's own example
    assert namespace["atoms"].get_forces().shape == (frames.topology.n_atoms, 3)
