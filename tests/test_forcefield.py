"""The reference force field, described once: read from LAMMPS inputs and logs as LAMMPS reads them, stored in
the manifest, replayed for reruns; its special_bonds weights make the PME baseline LAMMPS' own Coulomb."""

import json
import shutil

import numpy as np
import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import load_frames, read_lammps, read_topology
from gnnmd.data.forcefield import ForceField, SpecialBonds, dataset_force_field
from gnnmd.data.reader import DataError
from gnnmd.data.topology import special_neighbours
from gnnmd.lammps.engine import lammps_path, start_lammps
from gnnmd.lammps.label import cached_reference_virials
from gnnmd.models.electrostatics import Electrostatics, PMESettings

OPLS = """units real
pair_style lj/cut/coul/long 12.0
pair_modify mix geometric
bond_style harmonic
special_bonds lj/coul 0.0 0.0 0.5
kspace_style pppm 1.0e-4
"""


def test_special_bonds_follow_lammps_rules():
    """Each special_bonds command starts from 0 0 0 and sets what it names; presets as LAMMPS defines them."""
    assert SpecialBonds.parse("lj/coul 0.0 0.0 0.5".split(), "x") == SpecialBonds((0, 0, 0.5), (0, 0, 0.5))
    assert SpecialBonds.parse("lj 0 0 0.5 coul 0 0 1 angle yes".split(), "x") == SpecialBonds(
        (0, 0, 0.5), (0, 0, 1), angle=True
    )
    assert SpecialBonds.parse(["coul", "0", "0", "0.5"], "x").lj == (0, 0, 0)  # what it does not name is reset
    assert SpecialBonds.parse(["amber"], "x") == SpecialBonds((0, 0, 0.5), (0, 0, 5 / 6))
    for bad in (["lj", "0", "0"], ["lj/coul", "0", "0", "2"], ["angle", "maybe"], ["fancy"]):
        with pytest.raises(DataError, match="cannot read `special_bonds"):
            SpecialBonds.parse(bad, "in.lmp")
    assert ForceField.parse("pair_style lj/cut 10", "x").special_bonds == SpecialBonds()  # LAMMPS' default


def test_force_field_settings_from_an_input():
    ff = ForceField.parse(OPLS, "in.opls")
    assert ff.pair_style == "lj/cut/coul/long" and ff.pair_cutoffs == (12.0, 12.0)
    assert ff.mixing == "geometric" and ff.kspace == ("pppm", 1e-4)
    assert ff.special_bonds.coul == (0.0, 0.0, 0.5)
    assert ForceField.parse("pair_style lj/cut/coul/long 10 12", "x").pair_cutoffs == (10.0, 12.0)
    assert ForceField.parse("pair_style coul/long 8", "x").pair_cutoffs == (None, 8.0)
    assert ForceField.parse("pair_style lj/charmm/coul/long 8 10", "x").mixing == "arithmetic"  # its default
    assert ForceField.parse("pair_style lj/charmm/coul/long 8 10", "x").pair_cutoffs == (10.0, 10.0)
    assert ForceField.parse("pair_style lj/cut 10\npair_modify mix arithmetic", "x").mixing == "arithmetic"
    settings = PMESettings.for_force_field(ff)
    assert settings.special == (0.0, 0.0, 0.5) and settings.accuracy == 1e-4 and not settings.angle
    # stored and read back alike
    assert ForceField.from_dict(json.loads(json.dumps(ff.to_dict()))) == ff


def test_force_fields_gnnmd_cannot_describe_are_refused(tmp_path):
    with pytest.raises(DataError, match="in.lmp: `pair_style lj/cut \\${rc}` uses LAMMPS variables"):
        ForceField.parse("pair_style lj/cut ${rc}\n", "in.lmp")
    with pytest.raises(DataError, match="says units metal"):
        ForceField.parse("units metal\npair_style lj/cut 10\n", "in.lmp", units="real")
    with pytest.raises(DataError, match="force field in units metal"):
        ForceField.parse("units metal\npair_style lj/cut 10\n", "in.lmp")
    with pytest.raises(DataError, match="mixing rule must be one of"):
        ForceField.parse("pair_style lj/cut 10\npair_modify mix silly\n", "in.lmp")
    empty = tmp_path / "empty.lmp"
    empty.write_text("units real\nrun 0\n")
    with pytest.raises(DataError, match="empty.lmp: holds no force-field command"):
        ForceField.read(empty)
    binary = tmp_path / "binary.lmp"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="binary.lmp: cannot read it"):
        ForceField.read(binary)


def test_a_log_gives_the_force_field_it_ran_with(water_run):
    """A LAMMPS log echoes its input, includes and the substituted form of lines with variables."""
    from_log = ForceField.read(water_run / "segment_000" / "log.lammps")
    shipped = ForceField.shipped("spcfw.ff")
    assert from_log.commands == shipped.commands
    manifest = json.loads((water_run / "manifest.json").read_text())
    assert ForceField.from_dict(manifest["force_field"]) == shipped == dataset_force_field(water_run)


def test_special_neighbours_of_a_chain_and_a_ring():
    class Chain:  # 0-1-2-3-4 and a separate 5-6
        n_atoms = 7
        bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [5, 6], [1, 0]])
        angles = np.array([[0, 1, 2]])

    one, two, three = special_neighbours(Chain)
    assert one.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4], [5, 6]]
    assert two.tolist() == [[0, 2], [1, 3], [2, 4]] and three.tolist() == [[0, 3], [1, 4]]
    assert special_neighbours(Chain, angle=True)[1].tolist() == [[0, 2]]

    class Ring:  # a 4-ring: the far corner is 1-3 both ways round, never 1-4
        n_atoms = 4
        bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])
        angles = np.zeros((0, 3), dtype=int)

    one, two, three = special_neighbours(Ring)
    assert len(one) == 4 and two.tolist() == [[0, 2], [1, 3]] and len(three) == 0


@pytest.mark.parametrize(
    "special_bonds, settings",
    [
        ("lj/coul 0.0 0.0 0.5", PMESettings(accuracy=1e-8, special=(0.0, 0.0, 0.5), angle=False)),
        ("lj/coul 0.0 0.3 0.5 angle yes", PMESettings(accuracy=1e-8, special=(0.0, 0.3, 0.5), angle=True)),
    ],
)
def test_pme_with_the_special_weights_is_lammps_coulomb(chains_data_file, tmp_path, special_bonds, settings):
    """1-2, 1-3 and 1-4 pairs weighted as LAMMPS' special_bonds (with and without `angle yes`, which here
    drops the 1-3 pairs of the chains' second angle that is not listed): torch-pme's Coulomb forces and
    energy equal LAMMPS' coul/long + pppm on the same frame."""
    data_file = chains_data_file
    dump = tmp_path / "forces.lammpstrj"
    lmp = start_lammps(log=tmp_path / "log.lammps")
    lmp.commands_list(
        ["units real", "atom_style full", "boundary p p p", f"read_data {lammps_path(data_file)} nocoeff",
         "pair_style coul/long 8.0", "pair_coeff * *", "bond_style zero", "bond_coeff *", "angle_style zero",
         "angle_coeff *", "kspace_style pppm 1e-7", f"special_bonds {special_bonds}",
         f"dump f all custom 1 {lammps_path(dump)} id mol type q x y z fx fy fz", "dump_modify f sort id format float %.12g",
         "thermo_style custom step pe", "run 0"]
    )  # fmt: skip
    energy = lmp.get_thermo("pe")
    lmp.close()
    reference = read_lammps(data_file, dump)
    topology = read_topology(data_file)
    coulomb = Electrostatics.for_system(topology, reference.cells[0], settings)
    positions = torch.from_numpy(reference.positions[0]).double()
    computed_energy, forces = coulomb(positions, torch.from_numpy(reference.cells[0]).double())
    assert np.abs(forces.numpy() - reference.forces[0]).max() < 1e-3
    assert float(computed_energy) == pytest.approx(energy, abs=1e-3)
    # the weights matter here: full 1-4 pairs give other forces
    full = Electrostatics.for_system(topology, reference.cells[0], settings, special=(0.0, settings.special[1], 1.0))
    assert (
        np.abs(full(positions, torch.from_numpy(reference.cells[0]).double())[1].numpy() - forces.numpy()).max() > 0.1
    )


def test_an_import_with_its_log_has_the_reference_for_reruns(water_run, tmp_path, capsys):
    """`gnnmd import --forcefield LOG` keeps the run's force field, so the imported frames have reference virials equal
    to those of the generated dataset; without a force field a rerun is a one-line error."""
    segment = water_run / "segment_000"
    imported, bare = tmp_path / "imported", tmp_path / "bare"
    base = ["import", "--data", str(segment / "system.data"), "--dump", str(segment / "frames.lammpstrj")]
    assert main([*base, "--forcefield", str(segment / "log.lammps"), "--out", str(imported)]) == 0
    assert "reference force field: " in capsys.readouterr().out
    assert dataset_force_field(imported) == ForceField.read(segment / "log.lammps")
    generated_run = tmp_path / "generated"  # a copy: the virial cache is written into the dataset folder
    shutil.copytree(water_run, generated_run)
    generated = cached_reference_virials(generated_run).virials[load_frames(generated_run).segments == 0]
    # the imported dump is written from the float32 frames: ~1e-5 relative in each component
    np.testing.assert_allclose(cached_reference_virials(imported).virials, generated, rtol=1e-4, atol=1e-2)
    assert main([*base, "--out", str(bare)]) == 0
    assert "no reference force field" in capsys.readouterr().out
    with pytest.raises(ValueError, match="manifest.json: names no reference force field"):
        cached_reference_virials(bare)


def test_shipped_older_checkpoints_load_typed_with_their_old_pme_settings():
    """Checkpoints written before the force field was described (formats 1 and 2: the cutoff stored twice,
    the PME real-space cutoff once called `cutoff`, two special weights) load as CheckpointInfo: one
    cutoff, 1-4 pairs full as they were, no force field."""
    from pathlib import Path

    from gnnmd.models.checkpoint import read_checkpoint, read_info

    shipped = Path(__file__).resolve().parents[1] / "benchmarks" / "models"
    raw = torch.load(shipped / "nequip-pme-water" / "best.pt", weights_only=True)
    assert raw["format_version"] == 1 and raw["electrostatics"]["special"] == [0.0, 0.0] and "cutoff" in raw
    info = read_info(shipped / "nequip-pme-water" / "best.pt")
    assert info.cutoff == raw["cutoff"] and "cutoff" not in read_checkpoint(info.path)
    assert info.pme == PMESettings(accuracy=raw["electrostatics"]["accuracy"], special=(0.0, 0.0, 1.0), angle=True,
                                   real_space_cutoff=raw["electrostatics"]["cutoff"])  # fmt: skip
    assert info.force_field is None and read_info(shipped / "nequip-argon-finetuned" / "best.pt").pme is None
    assert read_info(shipped / "csnequip-pme-water-al-stress" / "best.pt").pme.special == (0.0, 0.0, 1.0)


def test_stress_and_learn_on_an_import_without_a_force_field_are_one_line(water_run, argon_model, tmp_path, capsys):
    """What needs a rerun of the reference (evaluate --stress, gnnmd learn) names the missing force field,
    exit 2, no traceback (it was a KeyError 'protocol')."""
    segment = water_run / "segment_000"
    bare = tmp_path / "bare"
    argv = ["import", "--data", str(segment / "system.data"), "--dump", str(segment / "frames.lammpstrj")]
    assert main([*argv, "--out", str(bare)]) == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", str(argon_model), "--data", str(bare), "--stress", "--allow-unknown-types"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "names no reference force field" in err and not out.exists()
    other = tmp_path / "other.pt"
    shutil.copyfile(argon_model, other)
    torch.save({**torch.load(other, weights_only=True), "epoch": 1}, other)  # another file, same weights
    learn = ["learn", "--data", str(bare), "--models", str(argon_model), str(other), "--out", str(tmp_path / "l")]
    assert main([*learn, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "l").exists()
