"""Coarse-graining: mapped frames of real LAMMPS runs, force matching that recovers known bonded terms,
and the fitted force field running in LAMMPS (docs/coarse_grain.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import WATER_COM_MAPPING as COM

from gnnmd.cli import main
from gnnmd.data.coarse_grain import coarse_grain, load_cg_frames, write_cg_data
from gnnmd.data.forcefield import ForceField
from gnnmd.data.reader import read_lammps, read_manifest, read_run
from gnnmd.data.topology import Topology
from gnnmd.lammps.engine import start_lammps
from gnnmd.lammps.md_reference import run_lammps_md
from gnnmd.lammps.md_settings import MDSettings
from gnnmd.models.cg_fit import angle_parameters, bond_parameters, fit_cg, pair_force, write_fit

IDENTITY = """molecules:
  - name: water
    types: [1, 2, 2]
    sites:
      - {name: O, atoms: [0], placement: atom}
      - {name: H, atoms: [1], placement: atom}
      - {name: H, atoms: [2], placement: atom}
"""


@pytest.fixture(scope="module")
def cg_sets(water_run, tmp_path_factory):
    """The water run mapped one site per molecule (COM) and three (identity)."""
    folder = tmp_path_factory.mktemp("cg")
    (folder / "com.yaml").write_text(COM)
    (folder / "identity.yaml").write_text(IDENTITY)
    coarse_grain(water_run, folder / "com.yaml", folder / "com")
    coarse_grain(water_run, folder / "identity.yaml", folder / "identity")
    return folder


def test_identity_mapping_gives_the_atomistic_forces_exactly(water_run, cg_sets):
    atoms, sites = read_run(water_run, progress=False), load_cg_frames(cg_sets / "identity")
    assert np.array_equal(sites.forces, atoms.forces)
    shift = (sites.positions - atoms.positions).astype(np.float64)
    fractional = np.einsum("fnj,fjk->fnk", shift, np.linalg.inv(atoms.cells.astype(np.float64)))
    assert np.abs(fractional - np.round(fractional)).max() < 1e-5  # the same points, wrapped into the cell
    assert len(sites.topology.bonds) == 64 and len(sites.topology.angles) == 32
    assert list(sites.topology.table_names) == ["O", "H"]
    assert np.array_equal(sites.timesteps, atoms.timesteps) and np.array_equal(sites.segments, atoms.segments)


def test_com_mapping_sums_each_molecules_forces(water_run, cg_sets):
    atoms, sites = read_run(water_run, progress=False), load_cg_frames(cg_sets / "com")
    assert sites.topology.n_atoms == 32 and len(sites.topology.bonds) == 0
    per_molecule = atoms.forces.astype(np.float64).reshape(len(atoms), 32, 3, 3).sum(axis=2)
    assert np.allclose(sites.forces, per_molecule, atol=1e-4)
    assert np.allclose(sites.forces.sum(axis=1), atoms.forces.astype(np.float64).sum(axis=1), atol=1e-3)
    table = read_manifest(cg_sets / "com")["type_table"]
    assert table[0]["name"] == "W" and table[0]["mass"] == pytest.approx(15.9994 + 2 * 1.008)
    assert np.allclose(sites.energies, atoms.energies)
    manifest = read_manifest(cg_sets / "com")
    assert manifest["source"] == "coarse-grain" and manifest["coarse_grained_from"]["dataset"] == str(water_run)
    assert manifest["mapping"]["molecules"][0]["sites"][0]["placement"] == "com"
    assert len(manifest["segments"]) == len(read_manifest(water_run)["segments"])


def test_joint_fit_of_spcfw_finds_its_bond_and_angle(cg_sets):
    """Identity mapping: the O-H bond (529.581, 1.012) and H-O-H angle (37.95, 113.24) of SPC/Fw, fit
    jointly with pair splines that take up Lennard-Jones and Coulomb."""
    fit = fit_cg(load_cg_frames(cg_sets / "identity"), cutoff=4.5, spacing=0.25)
    (bond,), (angle,) = bond_parameters(fit), angle_parameters(fit)
    assert bond["K"] == pytest.approx(529.581, rel=0.01) and bond["r0"] == pytest.approx(1.012, rel=0.002)
    assert angle["K"] == pytest.approx(37.95, rel=0.03) and angle["theta0"] == pytest.approx(113.24, abs=1.0)
    assert fit.report["relative_residual"] < 0.1


def _triatomic_frames(folder):
    """20 A-B-A molecules with only a harmonic bond (300, 1.1) and angle (50, 109.47) and no pair forces,
    run by LAMMPS at 600 K."""
    rng = np.random.default_rng(3)
    n, positions = 20, []
    for k in range(n):
        centre = np.array([k % 4, (k // 4) % 4, k // 16], dtype=float) * 3.0 + 1.5
        positions += [centre + [-1.0, 0.3, 0.0], centre, centre + [0.4, 1.0, 0.1]]
    positions = np.array(positions) + rng.normal(0, 0.05, (3 * n, 3))
    zero = np.zeros(3 * n)
    topology = Topology(types=np.tile([0, 1, 0], n), charges=zero, epsilon=zero, sigma=zero,
                        molecules=np.repeat(np.arange(1, n + 1), 3),
                        bonds=np.array([[3 * k + a, 3 * k + 1] for k in range(n) for a in (0, 2)]),
                        angles=np.array([[3 * k, 3 * k + 1, 3 * k + 2] for k in range(n)]),
                        table_type_ids=np.array([1, 2]), table_names=np.array(["A", "B"]),
                        table_masses=np.array([15.0, 14.0]), table_charges=np.zeros(2),
                        table_epsilon=np.zeros(2), table_sigma=np.zeros(2))  # fmt: skip
    data, dump = folder / "tri.data", folder / "tri.lammpstrj"
    write_cg_data(topology, positions, np.diag([12.0, 12.0, 12.0]), data)
    lmp = start_lammps(log=folder / "log.lammps")
    lmp.commands_list(["units real", "atom_style full", "pair_style lj/cut 3.0", "bond_style harmonic",
                       "angle_style harmonic", f"read_data {data}", "bond_coeff 1 300 1.1",
                       "angle_coeff 1 50 109.47", "velocity all create 600 5", "fix 1 all nve",
                       f"dump d all custom 5 {dump} id mol type q x y z fx fy fz",
                       "dump_modify d sort id format float %.10g", "run 200"])  # fmt: skip
    lmp.close()
    return read_lammps(data, dump)


def test_bond_and_angle_fit_recovers_known_terms_exactly(tmp_path):
    fit = fit_cg(_triatomic_frames(tmp_path), cutoff=3.0, spacing=0.5)
    (bond,), (angle,) = bond_parameters(fit), angle_parameters(fit)
    assert bond["K"] == pytest.approx(300.0, rel=1e-3) and bond["r0"] == pytest.approx(1.1, rel=1e-4)
    assert angle["K"] == pytest.approx(50.0, rel=1e-3) and angle["theta0"] == pytest.approx(109.47, abs=1e-2)
    assert fit.report["relative_residual"] < 1e-3


def test_exported_table_runs_in_lammps(cg_sets, tmp_path):
    frames = load_cg_frames(cg_sets / "com")
    fit = fit_cg(frames, cutoff=4.5, spacing=0.25)
    record = write_fit(fit, frames, tmp_path / "fit")
    last = (tmp_path / "fit" / "cg.table").read_text().split()[-4:]
    assert float(last[1]) == 4.5 and float(last[2]) == 0.0  # energy 0 at the cutoff
    assert record["pairs"][0]["types"] == "W-W"
    assert pair_force(fit, (0, 0), np.array([0.1]))[0] > 0  # repulsive below the closest pair seen
    summary = run_lammps_md(tmp_path / "fit" / "cg.data", ForceField.read(tmp_path / "fit" / "cg.ff"),
                            MDSettings(50, ensemble="nvt", temperature=300.0), tmp_path / "md")  # fmt: skip
    assert summary["failed_at_step"] is None and summary["atoms"] == 32
    assert 100 < summary["mean_temperature"] < 600


def test_cli_maps_and_fits(water_run, tmp_path, capsys):
    (tmp_path / "com.yaml").write_text(COM)
    cg, fit = tmp_path / "cg", tmp_path / "fit"
    assert (
        main(["coarse-grain", "--data", str(water_run), "--mapping", str(tmp_path / "com.yaml"), "--out", str(cg)]) == 0
    )
    assert main(["coarse-grain", "fit", "--data", str(cg), "--out", str(fit), "--cutoff", "4.5"]) == 0
    assert json.loads((fit / "fit.json").read_text())["sites"] == 32
    again = ["coarse-grain", "--data", str(water_run), "--mapping", str(tmp_path / "com.yaml"), "--out", str(cg)]
    assert main(again) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*again, "--overwrite"]) == 0
    (fit / "notes.txt").write_text("mine")
    assert main(["coarse-grain", "fit", "--data", str(cg), "--out", str(fit), "--overwrite"]) == 2
    assert (fit / "notes.txt").read_text() == "mine"


def test_fit_refuses_a_cutoff_beyond_half_the_box(cg_sets):
    with pytest.raises(ValueError, match="half the smallest box width"):
        fit_cg(load_cg_frames(cg_sets / "com"), cutoff=6.0)


@pytest.mark.parametrize(
    "types, sites, message",
    [
        ("[1, 1, 2]", "[{name: W, atoms: [0, 1, 2]}]", "matches no molecule"),
        ("[1, 2, 2]", "[{name: W, atoms: [0, 1, 3]}]", "out of range"),
        ("[1, 2, 2]", "[{name: A, atoms: [0, 1]}, {name: B, atoms: [1, 2]}]", "in two sites"),
        ("[1, 2, 2]", "[{name: A, atoms: [0, 1]}]", "in no site"),
        ("[1, 2, 2]", "[{name: A, atoms: []}, {name: B, atoms: [0, 1, 2]}]", "is empty"),
    ],
)
def test_mapping_errors_are_one_line_exit_2(water_run, tmp_path, capsys, types, sites, message):
    mapping = tmp_path / "bad.yaml"
    mapping.write_text(f"molecules:\n  - name: water\n    types: {types}\n    sites: {sites}\n")
    out = tmp_path / "cg"
    assert main(["coarse-grain", "--data", str(water_run), "--mapping", str(mapping), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(mapping) in err
    assert not out.exists()


def test_two_site_mapping_has_one_cg_bond_per_molecule(water_run, tmp_path):
    """Sites OH1 (on O, forces of O and H1) and H2: bonded atoms across sites make one CG bond, no angle."""
    mapping = tmp_path / "two.yaml"
    mapping.write_text("molecules:\n  - name: water\n    types: [1, 2, 2]\n    sites:\n"
                       "      - {name: A, atoms: [0, 1], placement: atom}\n      - {name: B, atoms: [2], placement: atom}\n")  # fmt: skip
    coarse_grain(water_run, mapping, tmp_path / "cg")
    atoms, sites = read_run(water_run, progress=False), load_cg_frames(tmp_path / "cg")
    assert len(sites.topology.bonds) == 32 and len(sites.topology.angles) == 0
    assert np.array_equal(sites.topology.bonds[:3], [[0, 1], [2, 3], [4, 5]])
    forces = atoms.forces.astype(np.float64)
    assert np.allclose(sites.forces[:, 0], forces[:, 0] + forces[:, 1], atol=1e-4)
    assert np.allclose(sites.forces[:, 1], forces[:, 2])
    assert list(sites.topology.table_masses) == pytest.approx([15.9994 + 1.008, 1.008])
    (bond,) = bond_parameters(fit_cg(sites, cutoff=4.5, spacing=0.25))
    assert 0.9 < bond["r0"] < 1.1  # the O-H2 distance: the A site sits on the O


def test_an_imported_dataset_maps_like_a_generated_one(water_run, cg_sets, tmp_path):
    segment = water_run / "segment_000"
    imported = tmp_path / "imported"
    args = ["import", "--data", str(segment / "system.data"), "--dump", str(segment / "frames.lammpstrj")]
    assert main([*args, "--units", "real", "--out", str(imported)]) == 0
    coarse_grain(imported, cg_sets / "com.yaml", tmp_path / "cg")
    mapped, generated = load_cg_frames(tmp_path / "cg"), load_cg_frames(cg_sets / "com")
    first = generated.segments == 0
    assert np.allclose(mapped.forces, generated.forces[first]) and np.allclose(
        mapped.positions, generated.positions[first]
    )
