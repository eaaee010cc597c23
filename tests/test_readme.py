"""The README keeps its promises: its "Your own data" and "From ASE" examples run as they are written (in a
folder that holds the files they name: a LAMMPS run, an extxyz, a model and a dataset), its test command is
the one CI runs, it stays short and its docs/ links lead somewhere, and the reproduction table in
docs/reproduction.md is the latest results' (written there by `gnnmd reproduce --update-doc`, never into
the README)."""

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
from gnnmd.study.reproduction import TABLE_MARKERS, doc_table_block, update_doc

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INSTALL = 'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e ".[test]"'


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
    for line in _block("Your own data", "bash").splitlines():
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


def test_readme_is_short_and_its_links_exist():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    links = set(re.findall(r"\]\(([^)#]+)", text)) | set(re.findall(r"\b(docs/[\w.-]+\.md)", text))
    assert {link for link in links if link.startswith("docs/")} >= {"docs/data.md", "docs/benchmarks.md"}
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)#:]+\.md)", doc.read_text()) + (list(links) if doc == README else []):
            assert (doc.parent / link).is_file(), f"{doc.name} links {link}, which does not exist"


def test_readme_commands_are_the_ones_ci_runs():
    text = README.read_text()
    assert f"{INSTALL} && .venv/bin/gnnmd quickstart --out quickstart\n" in text
    tests = _block("Tests", "bash").strip()
    assert tests.startswith(f"{INSTALL} && ")
    ci = {
        re.sub(r"(?<=pip install) -q| -p no:cacheprovider", "", line)
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
    }
    for step in tests.split(" && "):
        assert step in ci, f".ci/run does not run the README's {step!r}"


def test_reproduction_doc_holds_the_latest_table():
    head, tail = doc_table_block(ROOT / "docs" / "reproduction.md")
    text = (ROOT / "docs" / "reproduction.md").read_text()
    table = text[len(head) + len(TABLE_MARKERS[0]) + 1 : len(text) - len(tail) - len(TABLE_MARKERS[1]) - 1]
    assert table == (ROOT / "benchmarks" / "results" / "reproduction.md").read_text()
    assert TABLE_MARKERS[0] not in README.read_text()


def test_update_doc_writes_only_the_table_block(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(f"# Mine\n\nmy words\n{TABLE_MARKERS[0]}\nold\n{TABLE_MARKERS[1]}\n\nmore of mine\n")
    update_doc(doc, "| new |\n")
    assert doc.read_text() == f"# Mine\n\nmy words\n{TABLE_MARKERS[0]}\n| new |\n\n{TABLE_MARKERS[1]}\n\nmore of mine\n"
    plain = tmp_path / "README.md"
    plain.write_text("# no table here\n")
    work = tmp_path / "work"
    args = ["reproduce", "--scale", "quick", "--work", str(work), "--update-doc", str(plain)]
    assert main(args) == 2  # refused before any work: no folder, the file as it was
    assert not work.exists() and plain.read_text() == "# no table here\n"
