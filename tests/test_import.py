"""`gnnmd import`: a plain LAMMPS run (no manifest) imported, trained for an epoch and evaluated; an
extxyz written with ASE from generated frames imported with a data-file topology gives the same frames;
metal input converted; other units refused, also a data file relabelled `units metal` read as real."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gnnmd.cli import main
from gnnmd.data import load_frames, read_lammps
from gnnmd.data.reader import KCAL_PER_EV, DataError, read_topology
from gnnmd.lammps.md_reference import run_lammps_md
from gnnmd.lammps.md_settings import MDSettings


@pytest.fixture(scope="module")
def plain_run(water_run, tmp_path_factory):
    """A LAMMPS run with nothing of gnnmd's dataset around it: data file, dump with forces, log."""
    out = tmp_path_factory.mktemp("plain") / "run"
    data_file = water_run / "segment_000" / "system.data"
    run_lammps_md(data_file, "spcfw.ff", MDSettings(12, temperature=300.0, dump_every=2), out)
    return data_file, out / "trajectory.lammpstrj", out / "log.lammps"


def test_a_plain_lammps_run_imported_trained_and_evaluated(plain_run, tmp_path, capsys):
    data_file, dump, log = plain_run
    out = tmp_path / "imported"
    assert main(["import", "--data", str(data_file), "--dump", str(dump), "--log", str(log), "--out", str(out)]) == 0
    assert "7 frames of 96 atoms in 1 segment(s), with energies" in capsys.readouterr().out
    frames = load_frames(out)
    raw = read_lammps(data_file, dump)
    assert np.array_equal(frames.positions, raw.positions) and np.allclose(frames.forces, raw.forces)
    thermo = np.loadtxt(dump.parent / "thermo.txt", comments="#", ndmin=2)  # step, T, pe, ...
    assert np.allclose(frames.energies, thermo[::2, 2][: len(frames)], rtol=1e-6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "import" and manifest["units"] == "real" and manifest["converted"] is None
    assert manifest["imported_from"]["dumps"] == [str(dump.resolve())]
    runs = tmp_path / "runs"
    train = ["train", "--data", str(out), "--model", "nequip", "--hyper", "channels=4", "--hyper", "layers=1"]
    assert main([*train, "--cutoff", "3.0", "--epochs", "1", "--runs-dir", str(runs), "--name", "m", "--quiet"]) == 0
    result = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(runs / "m" / "best.pt"), "--data", str(out), "--out", str(result)]) == 0
    assert json.loads(result.read_text())["frames"] == 7


def test_extxyz_written_with_ase_imports_to_the_same_frames(water_run, tmp_path):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = load_frames(water_run)
    names = list(np.asarray(frames.topology.table_names)[frames.topology.types])
    images = []
    for k in range(4):
        atoms = Atoms(names, positions=frames.positions[k], cell=frames.cells[k], pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=frames.energies[k] / KCAL_PER_EV,
                                           forces=frames.forces[k] / KCAL_PER_EV)  # fmt: skip
        images.append(atoms)
    write(tmp_path / "traj.xyz", images, format="extxyz")
    out = tmp_path / "from-xyz"
    topology = water_run / "segment_000" / "system.data"
    assert main(["import", "--extxyz", str(tmp_path / "traj.xyz"), "--topology", str(topology), "--out", str(out)]) == 0
    imported = load_frames(out)
    assert len(imported) == 4 and imported.topology.same_as(frames.topology)
    assert np.allclose(imported.positions, frames.positions[:4], atol=1e-5)
    assert np.allclose(imported.forces, frames.forces[:4], rtol=1e-5, atol=1e-4)
    assert np.allclose(imported.energies, frames.energies[:4], rtol=1e-8)
    assert json.loads((out / "manifest.json").read_text())["input_units"] == "metal"
    write(
        tmp_path / "short.xyz", [Atoms(names[:-1], positions=frames.positions[0][:-1], cell=frames.cells[0], pbc=True)]
    )
    code = main(
        ["import", "--extxyz", str(tmp_path / "short.xyz"), "--topology", str(topology), "--out", str(tmp_path / "x")]
    )
    assert code == 2 and not (tmp_path / "x").exists()


def _metal_copy(data_file, dump, folder):
    """The run as if LAMMPS had written it in metal units: epsilon and forces in eV (and eV/A)."""
    from gnnmd.data.importing import _converted_data_file

    folder.mkdir()
    _converted_data_file(data_file, folder / "metal.data", 1.0 / KCAL_PER_EV)
    text = (folder / "metal.data").read_text().replace("units = real", "units = metal", 1)
    (folder / "metal.data").write_text(text)
    lines, out, columns = dump.read_text().splitlines(), [], None
    for line in lines:
        words = line.split()
        if line.startswith("ITEM: ATOMS"):
            columns = words[2:]
        elif line.startswith("ITEM:"):
            columns = None
        elif columns and len(words) == len(columns):
            for name in ("fx", "fy", "fz"):
                words[columns.index(name)] = repr(float(words[columns.index(name)]) / KCAL_PER_EV)
            line = " ".join(words)
        out.append(line)
    (folder / "metal.lammpstrj").write_text("\n".join(out) + "\n")
    return folder / "metal.data", folder / "metal.lammpstrj"


def test_metal_is_converted_and_other_units_refused(plain_run, tmp_path, capsys):
    data_file, dump, _ = plain_run
    metal_data, metal_dump = _metal_copy(data_file, dump, tmp_path / "metal")
    with pytest.raises(DataError, match="written in LAMMPS units metal.*gnnmd import --units metal"):
        read_topology(metal_data)  # a file relabelled metal is no longer read as real
    out = tmp_path / "converted"
    assert main(["import", "--data", str(metal_data), "--dump", str(metal_dump), "--out", str(out)]) == 0
    assert "from metal" in capsys.readouterr().out
    converted, raw = load_frames(out), read_lammps(data_file, dump)
    assert np.allclose(converted.forces, raw.forces, rtol=1e-5, atol=1e-4)
    assert np.allclose(converted.topology.epsilon, raw.topology.epsilon, rtol=1e-6)
    lj = tmp_path / "lj.data"
    lj.write_text(data_file.read_text().replace("units = real", "units = lj", 1))
    code = main(["import", "--data", str(lj), "--dump", str(dump), "--out", str(tmp_path / "lj")])
    assert code == 2 and "units 'lj' are not supported" in capsys.readouterr().err
