"""OPLS-AA liquids built by moltemplate (gnnmd.lammps.moltemplate) against gnnmd's shipped files: the same
atoms under the two force fields give the same LAMMPS forces (ethane), or differ only where the parameters
differ (methanol's H-C-O-H torsion), and the built files run through `gnnmd generate custom --data`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from gnnmd.cli import main
from gnnmd.data.forcefield import ForceField, SpecialBonds
from gnnmd.lammps import moltemplate
from gnnmd.lammps.custom import TOPOLOGY, Molecule
from gnnmd.lammps.engine import lammps_input, start_lammps


def _installed() -> bool:
    try:
        moltemplate.moltemplate_executable()
    except moltemplate.MoltemplateError:
        return False
    return True


needs_moltemplate = pytest.mark.skipif(
    not _installed(), reason="moltemplate.sh not installed (pip install moltemplate: the gnnmd[moltemplate] extra)"
)


@pytest.fixture(scope="module")
def ethane(tmp_path_factory):
    """8 ethane molecules at 0.3 g/cm3, built by moltemplate."""
    return moltemplate.build_liquid("ethane", 8, 0.3, tmp_path_factory.mktemp("moltemplate"))


def _sections(path) -> dict[str, list[list[str]]]:
    sections, current = {}, None
    for raw in path.read_text().splitlines()[1:]:
        words = raw.split("#", 1)[0].split()
        if words and words[0][0].isalpha():
            current = sections.setdefault(words[0], [])
        elif words and current is not None:
            current.append(words)
    return sections


def _mol_charges(path) -> dict[int, float]:
    return {int(w[0]): float(w[1]) for w in _sections(path)["Charges"]}


def _shipped_copy(data, liquid: str, out):
    """The atoms of `data` (moltemplate's) under gnnmd's own molecule file: the types, charges and topology of
    lammps_inputs/LIQUID.mol for each molecule (moltemplate's atoms come in that file's order), positions kept."""
    molecule = Molecule.read(lammps_input(f"{liquid}.mol"))
    charges, size = _mol_charges(lammps_input(f"{liquid}.mol")), len(molecule.types)
    text = data.read_text()
    atoms = _sections(data)["Atoms"]
    lines = [f"{liquid}: moltemplate's positions, gnnmd's types", "", f"{len(atoms)} atoms"]
    lines += [f"{len(atoms) // size * len(molecule.topology[k])} {k}" for k in TOPOLOGY if molecule.topology[k]]
    lines += [f"{max(molecule.types.values())} atom types"]
    lines += [f"{max(t[0] for t in molecule.topology[k])} {k[:-1]} types" for k in TOPOLOGY if molecule.topology[k]]
    lines += [""] + re.findall(r"^.* [xyz]hi$", text, re.M) + ["", "Atoms # full", ""]
    for words in atoms:
        k = (int(words[0]) - 1) % size + 1
        lines.append(f"{words[0]} {words[1]} {molecule.types[k]} {charges[k]} {' '.join(words[4:7])}")
    for kind in TOPOLOGY:
        if molecule.topology[kind]:
            lines += ["", kind.title(), ""]
            listed = [(t, *(m * size + i for i in ids)) for m in range(len(atoms) // size)
                      for t, *ids in molecule.topology[kind]]  # fmt: skip
            lines += [f"{n} {' '.join(map(str, entry))}" for n, entry in enumerate(listed, start=1)]
    path = out / f"{liquid}_shipped.data"
    path.write_text("\n".join([*lines, ""]))
    return path


def _forces(data, forcefield, *extra) -> tuple[np.ndarray, float, np.ndarray]:
    """LAMMPS forces (by atom id) and potential energy of `data` under `forcefield`, run 0, every atom first
    moved by up to 0.15 A (LAMMPS draws each atom's move from its position: the same in both files), so that
    bonds and angles are off their minimum and every term pulls."""
    lmp = start_lammps()
    try:
        lmp.commands_list(["units real", "atom_style full", "boundary p p p", f"read_data {data}",
                           "displace_atoms all random 0.15 0.15 0.15 7 units box", f"include {forcefield}",
                           *extra, "run 0"])  # fmt: skip
        forces = np.array(lmp.gather_atoms("f", 1, 3)[:]).reshape(-1, 3)
        positions = np.array(lmp.gather_atoms("x", 1, 3)[:]).reshape(-1, 3)
        return forces, float(lmp.get_thermo("pe")), positions
    finally:
        lmp.close()


def _topology_sets(path) -> dict[str, set]:
    """Bonds, angles and dihedrals as sets of atom-id tuples (direction ignored), types dropped."""
    sections = _sections(path)
    return {k: {min(tuple(w[2:]), tuple(w[2:][::-1])) for w in sections.get(k.title(), [])} for k in TOPOLOGY}


@needs_moltemplate
def test_ethane_force_field_keeps_the_opls_conventions(ethane):
    data, forcefield = ethane
    built, shipped = ForceField.read(forcefield), ForceField.read(lammps_input("oplsaa_ethane.ff"))
    assert built.mixing == "geometric"
    assert built.special_bonds == SpecialBonds(lj=(0.0, 0.0, 0.5), coul=(0.0, 0.0, 0.5))
    assert "dihedral_style opls" in built.commands and built.pair_style == "lj/cut/coul/long"
    assert built.pair_cutoffs == shipped.pair_cutoffs == (11.0, 11.0) and built.kspace == shipped.kspace
    atoms = _sections(data)["Atoms"]
    assert len(atoms) == 64 and len(_sections(data)["Dihedrals"]) == 72  # 9 H-C-C-H per molecule: 1-4 pairs
    for m in range(1, 9):
        assert abs(sum(float(w[3]) for w in atoms if w[1] == str(m))) < 1e-9
    # moltemplate's angles and dihedrals (made by its rules) are the ones of gnnmd's molecule file
    assert _topology_sets(data) == _topology_sets(_shipped_copy(data, "ethane", data.parent))


@needs_moltemplate
def test_ethane_forces_equal_the_shipped_force_field(ethane, tmp_path):
    data, forcefield = ethane
    shipped = lammps_input("oplsaa_ethane.ff")
    copy = _shipped_copy(data, "ethane", tmp_path)
    ours, energy, positions = _forces(data, forcefield)
    theirs, energy_shipped, positions_shipped = _forces(copy, shipped)
    np.testing.assert_array_equal(positions, positions_shipped)
    assert 5.0 < np.abs(theirs).mean() < 200.0  # bonds and angles pulling, not zeros
    assert np.abs(ours - theirs).max() < 1e-6 and abs(energy - energy_shipped) < 1e-6
    # the comparison sees a small change: methanol's moltemplate torsion height on ethane's H-C-C-H
    changed, _, _ = _forces(copy, shipped, "dihedral_coeff 1 0.0 0.0 0.352 0.0")
    assert np.abs(changed - theirs).max() > 1e-2


@needs_moltemplate
def test_built_ethane_runs_through_generate_custom(ethane, tmp_path):
    data, forcefield = ethane
    out = tmp_path / "run"
    args = ["generate", "custom", "--data", str(data), "--forcefield", str(forcefield), "--temperature", "180"]
    args += ["--frames", "2", "--segments", "1", "--stride", "5", "--equil-steps", "0", "--threads", "1"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["atoms"] == 64 and manifest["frame_count"] == 2
    assert "pair_modify mix geometric" in manifest["force_field"]["commands"]


@needs_moltemplate
@pytest.mark.slow
def test_methanol_differs_from_the_shipped_only_in_the_hcoh_torsion(tmp_path):
    """oplsaa2008's HC-CT-OH-HO V3 is 0.352 kcal/mol (BOSS 2002+); gnnmd's file has Jorgensen 1996's 0.450."""
    data, forcefield = moltemplate.build_liquid("methanol", 8, 0.3, tmp_path)
    shipped = lammps_input("oplsaa_methanol.ff")
    copy = _shipped_copy(data, "methanol", tmp_path)
    assert _topology_sets(data) == _topology_sets(copy)
    ours, energy, _ = _forces(data, forcefield)
    theirs, _, _ = _forces(copy, shipped)
    assert np.abs(ours - theirs).max() > 1e-2
    same, energy_same, _ = _forces(copy, shipped, "dihedral_coeff 1 0.0 0.0 0.352 0.0")
    assert np.abs(ours - same).max() < 1e-4 and abs(energy - energy_same) < 1e-4


def test_missing_moltemplate_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(moltemplate.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(moltemplate.MoltemplateError, match=r"moltemplate\.sh not found .*pip install moltemplate"):
        moltemplate.build_liquid("ethane", 8, 0.3, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_liquid_is_refused():
    with pytest.raises(ValueError, match="no moltemplate recipe for 'water'"):
        moltemplate.system_lt("water", 8, 0.3)
