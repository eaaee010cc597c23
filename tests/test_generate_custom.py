"""`gnnmd generate` for your own liquid (a molecule or data file + a force-field include file) and the
shipped OPLS-AA ethane and methanol, against real LAMMPS: the dumped forces are the force field's, the
manifest holds it, and bad input is one line, exit 2, with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import lammps_rerun

from gnnmd.cli import main
from gnnmd.data import FrameDataset, load_frames
from gnnmd.data.forcefield import SpecialBonds, dataset_force_field
from gnnmd.files import file_sha256
from gnnmd.lammps.engine import lammps_input

ETHANE = ["--molecule", str(lammps_input("ethane.mol")), "--forcefield", str(lammps_input("oplsaa_ethane.ff"))]
TINY = ["--frames", "4", "--segments", "2", "--stride", "10", "--equil-steps", "50", "--threads", "1", "--no-progress"]


def _custom(out, *extra) -> list[str]:
    return ["generate", "custom", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def ethane_run(tmp_path_factory):
    """8 OPLS-AA ethane molecules given as your own files: 2 segments x 2 frames at 180 K."""
    out = tmp_path_factory.mktemp("ethane") / "run"
    args = _custom(out, *ETHANE, "--molecules", "8", "--density", "0.5", "--temperature", "180", "--seed", "3")
    assert main([*args, *TINY]) == 0
    return out


def test_custom_forces_equal_a_rerun_with_the_stored_force_field(ethane_run, tmp_path):
    frames = load_frames(ethane_run)
    assert len(frames) == 4 and frames.topology.n_atoms == 64
    rerun = lammps_rerun(ethane_run, tmp_path)
    first = frames.segments == 0
    assert len(rerun) == first.sum() == 2
    assert np.abs(rerun.forces - frames.forces[first]).max() < 1e-3
    np.testing.assert_allclose(rerun.energies, frames.energies[first], atol=1e-3)
    # real ethane forces: C-H bonds and angles, |F| of a few kcal/mol/A, not zeros
    assert 1.0 < np.abs(frames.forces).mean() < 50.0


def test_manifest_holds_the_force_field_and_the_files(ethane_run):
    manifest = json.loads((ethane_run / "manifest.json").read_text())
    force_field = dataset_force_field(ethane_run)
    assert force_field.special_bonds == SpecialBonds(lj=(0.0, 0.0, 0.5), coul=(0.0, 0.0, 0.5))
    assert force_field.mixing == "geometric" and force_field.kspace == ("pppm", 1e-4)
    assert "dihedral_style opls" in manifest["force_field"]["commands"]
    protocol = manifest["protocol"]
    for kind, name in (("molecule", "ethane.mol"), ("forcefield", "oplsaa_ethane.ff")):
        assert protocol[kind] == str(lammps_input(name))
        assert protocol[f"{kind}_sha256"] == file_sha256(lammps_input(name))
    assert protocol["count"] == 8 and protocol["temperature"] == [180.0, 180.0]
    table = {t["name"]: t for t in manifest["type_table"]}
    assert table["C"]["charge"] == -0.18 and table["H"]["sigma"] == 2.5
    assert sorted(p.name for p in (ethane_run / "segment_000").iterdir()) == [
        "energy.txt", "frames.lammpstrj", "log.lammps", "system.data"
    ]  # fmt: skip


def test_frames_load_and_a_graph_builds(ethane_run):
    frames = load_frames(ethane_run)
    graph = FrameDataset(frames, cutoff=3.4)[1]
    assert graph.x.shape == (64, 3) and graph.edge_index.shape[1] > 0
    torch.testing.assert_close(graph.y, torch.from_numpy(frames.forces[1]))
    # every ethane molecule: 2 C and 6 H, 7 bonds
    assert len(np.unique(frames.topology.molecules)) == 8 and len(frames.topology.bonds) == 56


def test_data_file_instead_of_a_molecule_file(ethane_run, tmp_path):
    data = ethane_run / "segment_001" / "system.data"
    out = tmp_path / "from-data"
    args = ["generate", "custom", "--out", str(out), "--data", str(data), "--forcefield", ETHANE[3]]
    assert main([*args, "--temperature", "180", "--frames", "2", "--segments", "1", "--stride", "5",
                 "--equil-steps", "0", "--threads", "1", "--no-progress"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["atoms"] == 64 and manifest["frame_count"] == 2
    assert manifest["protocol"]["data_sha256"] == file_sha256(data) and manifest["protocol"]["molecule"] is None


def test_methanol_preset_runs(tmp_path):
    out = tmp_path / "methanol"
    args = ["generate", "methanol", "--out", str(out), "--molecules", "8", "--frames", "2", "--segments", "1"]
    assert main([*args, "--stride", "5", "--equil-steps", "20", "--threads", "1", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["atoms"] == 48 and manifest["protocol"]["ensemble"] == "nvt"
    assert manifest["protocol"]["temperature"] == [300.0, 300.0]
    assert {t["name"] for t in manifest["type_table"]} == {"C", "O", "H"}


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


def _broken_forcefield(tmp_path, old: str, new: str):
    text = lammps_input("oplsaa_ethane.ff").read_text()
    assert old in text
    path = tmp_path / "broken.ff"
    path.write_text(text.replace(old, new))
    return path


def _refused(args, capsys) -> str:
    assert main([*args, *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gnnmd generate: error:") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_missing_molecule_file(tmp_path, capsys):
    out, missing = tmp_path / "out", tmp_path / "nowhere.mol"
    args = ["--molecule", str(missing), "--forcefield", ETHANE[3], "--molecules", "8", "--density", "0.5"]
    err = _refused(_custom(out, *args, "--temperature", "180"), capsys)
    assert str(missing) in err and "not found" in err and not out.exists()


def test_a_type_without_mass(tmp_path, capsys):
    broken = _broken_forcefield(tmp_path, "mass            2 1.008", "")
    out = tmp_path / "out"
    args = ["--molecule", ETHANE[1], "--forcefield", str(broken), "--molecules", "8", "--density", "0.5"]
    err = _refused(_custom(out, *args, "--temperature", "180"), capsys)
    assert "[2]" in err and "no mass" in err and str(broken) in err and not out.exists()


@pytest.mark.parametrize(
    "old, new, said",
    [
        ("pair_coeff      2 2 0.030 2.50", "pair_coeff      2 2 abc 2.50", "line 10"),  # LAMMPS refuses it
        ("special_bonds   lj/coul 0.0 0.0 0.5", "special_bonds   lj/coul 0.0 0.5", "special_bonds"),  # gnnmd
        ("dihedral_coeff  1 0.0 0.0 0.300 0.0", "dihedral_coeff  1 0.0 0.0", "line 18"),
        ("dihedral_style  opls", "", "sets no dihedral_style"),  # LAMMPS would drop the dihedrals silently
    ],
)
def test_a_force_field_with_a_syntax_problem(tmp_path, capsys, old, new, said):
    broken = _broken_forcefield(tmp_path, old, new)
    out = tmp_path / "out"
    args = ["--molecule", ETHANE[1], "--forcefield", str(broken), "--molecules", "8", "--density", "0.5"]
    err = _refused(_custom(out, *args, "--temperature", "180"), capsys)
    assert str(broken) in err and said in err and not out.exists()


def test_overwrite_refuses_a_folder_gnnmd_did_not_make(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    args = [*ETHANE, "--molecules", "8", "--density", "0.5", "--temperature", "180", "--overwrite"]
    err = _refused(_custom(out, *args), capsys)
    assert "not a gnnmd dataset" in err
    assert (out / "notes.txt").read_text() == "my notes" and [p.name for p in out.iterdir()] == ["notes.txt"]


def test_liquid_options_are_refused_for_study_systems(tmp_path, capsys):
    out = tmp_path / "water"
    err = _refused(["generate", "water", "--out", str(out), "--density", "1.0"], capsys)
    assert "--density" in err and not out.exists()


def test_masses_from_the_molecule_file(tmp_path):
    """No `mass` in the force field: the molecule file's Masses section gives them, and the dataset
    folder keeps only gnnmd's own files."""
    forcefield = tmp_path / "no-masses.ff"
    forcefield.write_text("".join(line + "\n" for line in lammps_input("oplsaa_ethane.ff").read_text().splitlines()
                                  if not line.startswith("mass")))  # fmt: skip
    molecule = tmp_path / "ethane.mol"
    masses = "\nMasses\n\n1 12.011\n2 12.011\n" + "".join(f"{k} 1.008\n" for k in range(3, 9))
    molecule.write_text(lammps_input("ethane.mol").read_text() + masses)
    out = tmp_path / "out"
    args = _custom(out, "--molecule", str(molecule), "--forcefield", str(forcefield), "--molecules", "4")
    assert main([*args, "--density", "0.5", "--temperature", "180", "--frames", "2", "--segments", "1",
                 "--stride", "5", "--equil-steps", "0", "--threads", "1", "--no-progress"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["mass"] for t in manifest["type_table"]] == [12.011, 1.008]
    assert sorted(p.name for p in (out / "segment_000").iterdir()) == [
        "energy.txt", "frames.lammpstrj", "log.lammps", "system.data"
    ]  # fmt: skip


def test_too_dense_a_start_is_one_line_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "dense"
    err = _refused(["generate", "ethane", "--out", str(out), "--molecules", "8", "--density", "5"], capsys)
    assert "instead of 64" in err and "--density" in err
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its .partial work folder
