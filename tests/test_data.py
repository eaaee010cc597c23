"""The data layer against real LAMMPS: generated frames, reading, periodic graphs and bad input."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import lammps_rerun

from gnnmd.cli import main
from gnnmd.data import (
    DataError,
    FrameDataset,
    build_graph,
    load_frames,
    make_loader,
    neighbor_list,
    read_lammps,
    split_indices,
)
from gnnmd.data.graphs import ANGLE, BOND, BOND_ONEHOT, DISTANCE, N_EDGE_FEATURES, UNIT_VECTOR
from gnnmd.data.reader import read_topology
from gnnmd.lammps.engine import start_lammps
from gnnmd.lammps.generate import generate, protocol_for

# ---------------------------------------------------------------- generated data equals LAMMPS itself


def test_water_forces_and_energies_equal_lammpslammps_rerun(water_run, tmp_path):
    frames = load_frames(water_run)
    manifest = json.loads((water_run / "manifest.json").read_text())
    assert manifest["source"] == "LAMMPS" and manifest["frame_count"] == len(frames) == 12
    rerun = lammps_rerun(water_run, tmp_path)
    first = frames.segments == 0
    assert len(rerun) == first.sum() == 6
    np.testing.assert_array_equal(rerun.timesteps, frames.timesteps[first])
    assert np.abs(rerun.forces - frames.forces[first]).max() < 1e-3
    np.testing.assert_allclose(rerun.energies, frames.energies[first], atol=1e-3)
    # the forces are real water forces, not zeros or noise: O-H bonds dominate, |F| ~ 10 kcal/mol/A
    assert 3.0 < np.abs(frames.forces).mean() < 30.0


def test_argon_forces_equal_lammpslammps_rerun(argon_run, tmp_path):
    frames = load_frames(argon_run)
    rerun = lammps_rerun(argon_run, tmp_path)
    assert np.abs(rerun.forces - frames.forces).max() < 1e-4
    table = frames.topology.type_table()
    assert [(t["name"], t["epsilon"], t["sigma"], t["charge"]) for t in table] == [("Ar", 0.2378, 3.405, 0.0)]
    # every argon atom is its own molecule
    assert len(np.unique(frames.topology.molecules)) == frames.topology.n_atoms


def test_water_topology_from_data_file(water_run):
    topology = load_frames(water_run).topology
    names = topology.table_names[topology.types]
    assert (names == "O").sum() == 32 and (names == "H").sum() == 64
    assert np.allclose(topology.charges[names == "O"], -0.82) and np.allclose(topology.charges[names == "H"], 0.41)
    assert np.allclose(topology.epsilon[names == "O"], 0.155) and np.allclose(topology.sigma[names == "O"], 3.165)
    assert np.all(topology.epsilon[names == "H"] == 0)
    assert topology.bonds.shape == (64, 2) and topology.angles.shape == (32, 3)


def test_triclinic_dump_is_read_with_its_cell(argon_run, tmp_path):
    """A sheared LAMMPS box: the cell read with MDAnalysis equals LAMMPS' own box matrix."""
    segment = argon_run / "segment_000"
    dump = tmp_path / "tri.lammpstrj"
    lmp = start_lammps(log=tmp_path / "tri.log")
    lmp.commands_list(
        [
            "units real",
            "atom_style full",
            "pair_style lj/cut 10.0",
            f"read_data {segment / 'system.data'}",
            "change_box all triclinic",
            "change_box all xy final 3.0 xz final -2.0 yz final 1.5 remap units box",
            f"dump d all custom 1 {dump} id mol type q x y z fx fy fz",
            "dump_modify d sort id format float %.10g",
            "run 0",
        ]
    )
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lmp.close()
    frames = read_lammps(segment / "system.data", dump)
    lx, ly, lz = np.subtract(boxhi, boxlo)
    expected = np.array([[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]])
    np.testing.assert_allclose(frames.cells[0], expected, atol=1e-4)
    assert frames.energies is None and np.all(np.isfinite(frames.forces))


# ---------------------------------------------------------------- neighbour lists and graphs


def _brute_force_pairs(positions, cell, cutoff):
    """All (i, j, shift) within the cutoff, checking every image that can be in range."""
    inverse = np.linalg.inv(cell)
    reach = [int(np.ceil(cutoff * np.linalg.norm(inverse[:, k]))) + 1 for k in range(3)]
    pairs = set()
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        d = positions[None, :, :] - positions[:, None, :] + np.array(shift) @ cell
        r = np.linalg.norm(d, axis=2)
        for i, j in zip(*np.nonzero((r < cutoff) & (r > 1e-9))):
            pairs.add((int(i), int(j), *shift))
    return pairs


@pytest.mark.parametrize(
    "cell",
    [
        np.diag([11.0, 12.5, 10.0]),
        np.array([[9.0, 0.0, 0.0], [2.5, 8.0, 0.0], [1.5, -2.0, 9.5]]),
        np.diag([4.0, 6.0, 5.0]),  # shorter than twice the cutoff: several images of one atom
        np.array([[4.5, 0.0, 0.0], [2.0, 4.0, 0.0], [-1.0, 1.5, 3.5]]),
    ],
    ids=["orthorhombic", "triclinic", "small-orthorhombic", "small-triclinic"],
)
def test_neighbor_list_equals_brute_force(cell):
    rng = np.random.default_rng(42)
    positions = rng.random((50, 3)) @ cell
    i, j, shifts, vectors = neighbor_list(positions, cell, 5.0)
    found = {(int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, shifts)}
    assert len(found) == len(i)  # no duplicates
    assert found == _brute_force_pairs(positions, cell, 5.0)
    np.testing.assert_allclose(vectors, positions[j] - positions[i] + shifts @ cell, atol=1e-9)


def test_water_graph_features_and_bond_classes(water_run):
    frames = load_frames(water_run)
    graph = FrameDataset(frames, cutoff=3.4)[3]
    n = frames.topology.n_atoms
    assert graph.x.shape == (n, 3) and graph.y.shape == (n, 3) and graph.edge_attr.shape[1] == N_EDGE_FEATURES == 8
    torch.testing.assert_close(graph.y, torch.from_numpy(frames.forces[3]))
    classes = graph.edge_attr[:, BOND_ONEHOT].argmax(dim=1)
    assert torch.all(graph.edge_attr[:, BOND_ONEHOT].sum(dim=1) == 1)
    receiver = graph.edge_index[1]
    names = frames.topology.table_names[frames.topology.types]
    oxygen, hydrogen = torch.from_numpy(names == "O"), torch.from_numpy(names == "H")
    bonds = torch.bincount(receiver[classes == BOND], minlength=n)
    angles = torch.bincount(receiver[classes == ANGLE], minlength=n)
    assert torch.all(bonds[oxygen] == 2) and torch.all(angles[oxygen] == 0)
    assert torch.all(bonds[hydrogen] == 1) and torch.all(angles[hydrogen] == 1)
    # bonded partners are in the same molecule, at O-H bond length; the 1-3 pair is H-H
    src, dst = graph.edge_index
    molecules = torch.from_numpy(frames.topology.molecules)
    bonded = classes == BOND
    assert torch.all(molecules[src[bonded]] == molecules[dst[bonded]])
    assert torch.all((graph.edge_attr[bonded, DISTANCE] > 0.8) & (graph.edge_attr[bonded, DISTANCE] < 1.3))
    assert torch.all(hydrogen[src[classes == ANGLE]] & hydrogen[dst[classes == ANGLE]])
    # unit vectors and raw displacements agree, and displacements follow from pos, shift and cell
    vec = graph.pos[src] - graph.pos[dst] + graph.edge_shift @ graph.cell[0]
    torch.testing.assert_close(vec, graph.edge_vec, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        graph.edge_attr[:, UNIT_VECTOR] * graph.edge_attr[:, DISTANCE : DISTANCE + 1], graph.edge_vec, atol=1e-5, rtol=0
    )
    assert float(graph.edge_attr[:, DISTANCE].max()) < 3.4


def test_bond_class_only_for_nearest_image():
    """In a cell shorter than twice the cutoff a bonded pair also meets further images of its partner;
    only the nearest one is the bond."""
    from gnnmd.data import Topology

    def arr(*values):
        return np.array(values)

    topology = Topology(
        types=arr(0, 1), charges=arr(0.0, 0.0), epsilon=arr(0.1, 0.1), sigma=arr(3.0, 3.0),
        molecules=arr(1, 1), bonds=np.array([[0, 1]]), angles=np.zeros((0, 3), dtype=np.int64),
        table_type_ids=arr(1, 2), table_names=arr("A", "B"), table_masses=arr(1.0, 1.0),
        table_charges=arr(0.0, 0.0), table_epsilon=arr(0.1, 0.1), table_sigma=arr(3.0, 3.0),
    )  # fmt: skip
    graph = build_graph(topology, [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.eye(3) * 3.0, cutoff=4.0)
    classes = graph.edge_attr[:, BOND_ONEHOT].argmax(dim=1)
    assert int((classes == BOND).sum()) == 2  # 0->1 and 1->0, each once
    assert torch.all(graph.edge_attr[classes == BOND, DISTANCE] == 1.0)


def test_split_and_loader(water_run):
    frames = load_frames(water_run)
    train, val = split_indices(frames, val_fraction=0.5, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(frames)
    assert len(np.unique(frames.segments[val])) == 1  # a whole segment, not neighbours in time
    again = split_indices(frames, val_fraction=0.5, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    train, val = split_indices(frames, val_fraction=0.1)  # too few segments: the end of each
    assert set(frames.segments[val]) == {0, 1}
    batch = next(iter(make_loader(FrameDataset(frames, 3.4, train), batch_size=3, shuffle=True)))
    assert batch.num_graphs == 3 and batch.cell.shape == (3, 3, 3) and batch.y.shape == (3 * 96, 3)


# ---------------------------------------------------------------- bad input


@pytest.fixture
def dump_copy(water_run, tmp_path):
    """A writable copy of one segment's data file and dump, as lists of lines to spoil."""
    segment = water_run / "segment_000"
    data = tmp_path / "system.data"
    shutil.copy(segment / "system.data", data)
    lines = (segment / "frames.lammpstrj").read_text().splitlines(keepends=True)
    return data, tmp_path / "spoiled.lammpstrj", lines


def _frame_start(lines, k):
    return [n for n, line in enumerate(lines) if line.startswith("ITEM: TIMESTEP")][k]


def test_missing_force_columns(dump_copy):
    data, dump, lines = dump_copy
    spoiled = []
    for line in lines:
        words = line.split()
        if line.startswith("ITEM: ATOMS"):
            line = "ITEM: ATOMS id mol type q x y z\n"
        elif not line.startswith("ITEM") and len(words) == 10:
            line = " ".join(words[:7]) + "\n"
        spoiled.append(line)
    dump.write_text("".join(spoiled))
    with pytest.raises(DataError, match=r"spoiled\.lammpstrj, frame 0: no force columns"):
        read_lammps(data, dump)


def test_atom_count_changing(dump_copy):
    data, dump, lines = dump_copy
    start = _frame_start(lines, 2)
    lines[start + 3] = "95\n"
    del lines[start + 9]
    dump.write_text("".join(lines))
    with pytest.raises(DataError, match=r"spoiled\.lammpstrj, frame 2.*(atoms|read)"):
        read_lammps(data, dump)


def test_unknown_atom_type(dump_copy):
    data, dump, lines = dump_copy
    row = _frame_start(lines, 1) + 9 + 4
    words = lines[row].split()
    words[2] = "7"
    lines[row] = " ".join(words) + "\n"
    dump.write_text("".join(lines))
    with pytest.raises(DataError, match=r"frame 1: atom type\(s\) \[7\] are not in .*system\.data"):
        read_lammps(data, dump)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nan_or_inf_forces(dump_copy, value):
    data, dump, lines = dump_copy
    row = _frame_start(lines, 4) + 9 + 10
    words = lines[row].split()
    words[8] = value
    lines[row] = " ".join(words) + "\n"
    dump.write_text("".join(lines))
    with pytest.raises(DataError, match=r"frame 4: forces contain NaN or inf"):
        read_lammps(data, dump)


def test_truncated_last_frame_keeps_complete_frames(dump_copy):
    data, dump, lines = dump_copy
    start = _frame_start(lines, 5)
    text = "".join(lines[: start + 40]) + lines[start + 40][:12]  # cut inside an atom line
    dump.write_text(text)
    with pytest.warns(UserWarning, match=r"spoiled\.lammpstrj: the last frame \(frame 5\) is truncated"):
        frames = read_lammps(data, dump)
    assert len(frames) == 5 and np.all(np.isfinite(frames.forces))


def test_data_file_without_pair_coeffs(dump_copy):
    data, dump, _ = dump_copy
    text = data.read_text()
    start = text.index("Pair Coeffs")
    end = text.index("Bond Coeffs")
    data.write_text(text[:start] + text[end:])
    with pytest.raises(DataError, match=r"system\.data: atom type\(s\) \[1, 2\] have no Pair Coeffs"):
        read_topology(data)


def test_dump_not_matching_data_file(water_run, argon_run):
    with pytest.raises(DataError, match=r"frames\.lammpstrj"):
        read_lammps(argon_run / "segment_000" / "system.data", water_run / "segment_000" / "frames.lammpstrj")


@pytest.mark.parametrize("cutoff", [0.0, -3.0, float("nan"), float("inf"), 500.0])
def test_absurd_cutoffs(water_run, cutoff):
    frames = load_frames(water_run)
    with pytest.raises(ValueError, match="cutoff"):
        FrameDataset(frames, cutoff)[0]


def test_wrong_position_shape(water_run):
    frames = load_frames(water_run)
    with pytest.raises(ValueError, match=r"positions have shape \(95, 3\)"):
        build_graph(frames.topology, frames.positions[0][:95], frames.cells[0], 3.4)


def test_corrupt_frames_file(tmp_path):
    broken = tmp_path / "frames.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"frames\.npz: not a readable gnnmd frames file"):
        load_frames(broken)


# ---------------------------------------------------------------- generate: the command and its safety


def test_generate_refuses_to_overwrite(water_run, capsys):
    before = (water_run / "manifest.json").read_text()
    code = main(["generate", "water", "--out", str(water_run), "--frames", "2", "--segments", "1", "--molecules", "8"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert (water_run / "manifest.json").read_text() == before


def test_generate_bad_protocol_is_refused_before_lammps(tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["generate", "water", "--out", str(out), "--frames", "7", "--segments", "2"]) == 2
    assert "multiple of segments" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_generate_overwrite_replaces_only_when_complete(tmp_path):
    out = tmp_path / "argon"
    protocol = protocol_for("argon", count=32, frames=2, stride=10, equil_steps=20, seed=5)
    generate(protocol, out, threads=1, progress=False)
    first = load_frames(out)
    bad = protocol_for("argon", count=32, frames=2, stride=10, equil_steps=20, seed=5, box=(2.0, 2.0, 2.0))
    with pytest.raises(RuntimeError):  # 32 atoms cannot be placed in a 2 A box
        generate(bad, out, overwrite=True, threads=1, progress=False)
    np.testing.assert_array_equal(load_frames(out).forces, first.forces)  # the old dataset survived
    generate(replace_seed(protocol, 6), out, overwrite=True, threads=1, progress=False)
    assert not np.array_equal(load_frames(out).forces, first.forces)


def replace_seed(protocol, seed):
    from dataclasses import replace

    return replace(protocol, seed=seed)


def test_replicated_water_keeps_its_bonds(water_run):
    """A 2x2x2 supercell of a real frame (molecules cross the box edge): every copy keeps its bonds and
    each atom sees the same number of neighbours of each class as in the box itself."""
    from gnnmd.data.frames import replicate

    frames = load_frames(water_run)
    topology, positions, cell = replicate(frames.topology, frames.positions[0], frames.cells[0], (2, 2, 2))
    assert topology.n_atoms == 8 * 96 and len(topology.bonds) == 8 * 64
    small = build_graph(frames.topology, frames.positions[0], frames.cells[0], 3.4)
    big = build_graph(topology, positions, cell, 3.4)

    def counts(graph, n):
        classes = graph.edge_attr[:, BOND_ONEHOT].argmax(dim=1)
        return torch.stack([torch.bincount(graph.edge_index[1][classes == c], minlength=n) for c in range(3)], 1)

    torch.testing.assert_close(counts(big, topology.n_atoms), counts(small, 96).repeat(8, 1))


@pytest.mark.slow
def test_quickstart_runs_the_whole_job(tmp_path):
    """The README's main job, tiny: LAMMPS water -> training -> evaluation -> figures."""
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--molecules", "16", "--frames", "12", "--epochs", "1"]
    assert main(args) == 0
    assert json.loads((out / "data" / "water" / "manifest.json").read_text())["source"] == "LAMMPS"
    run = out / "runs" / "eqforce-quickstart"
    assert (run / "best.pt").is_file() and (run / "metrics.csv").is_file()
    assert json.loads((run / "eval-water-val.json").read_text())["force_mae"] > 0
    assert {p.name for p in (out / "figures").iterdir()} == {
        "eqforce-quickstart_loss.png",
        "eqforce-quickstart_interactions.png",
    }
