"""PME Coulomb (torch-pme) against a LAMMPS rerun with only coul/long + pppm on real SPC/Fw frames, its
gradient, the per-frame cache the trainer subtracts from targets, and the inference-time sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnmd.data import FrameDataset, coulomb_cache, load_frames, make_loader
from gnnmd.inference.forces import WithCoulomb, with_coulomb
from gnnmd.lammps.engine import start_lammps
from gnnmd.models.electrostatics import Electrostatics, has_charges, special_pairs
from gnnmd.models.nequip import NequIP


def system_electrostatics(frames):
    return Electrostatics.for_system(frames.topology, frames.mean_cell())


N_FRAMES = 2


@pytest.fixture(scope="module")
def water(water_run):
    return load_frames(water_run)


@pytest.fixture(scope="module")
def electrostatics(water):
    return system_electrostatics(water)


@pytest.fixture(scope="module")
def lammps_coulomb(water_run, water, tmp_path_factory):
    """Energies and forces of the first frames of segment 0, rerun by LAMMPS with only the Coulomb part
    of SPC/Fw: coul/long + pppm (tighter than the 1e-5 of the run), same special_bonds."""
    out = tmp_path_factory.mktemp("coul_rerun")
    segment = water_run / "segment_000"
    frames = np.flatnonzero(water.segments == 0)[:N_FRAMES]
    last = int(water.timesteps[frames[-1]])
    lmp = start_lammps(log=out / "log.lammps")
    try:
        for command in [
            "units real",
            "atom_style full",
            "boundary p p p",
            "pair_style lj/cut/coul/long 10.0",  # the styles the data file's coefficients were written for
            "bond_style harmonic",
            "angle_style harmonic",
            f"read_data {segment / 'system.data'}",
            "pair_style coul/long 10.0",
            "pair_coeff * *",
            "bond_style zero",
            "bond_coeff *",
            "angle_style zero",
            "angle_coeff *",
            "kspace_style pppm 1.0e-6",
            "special_bonds lj 0.0 0.0 0.5 coul 0.0 0.0 1.0 angle yes",
            "thermo_style custom step pe",
            "thermo_modify format float %.10f",
            "thermo 1",
            f"dump f all custom 1 {out / 'forces.dump'} id fx fy fz",
            "dump_modify f sort id format float %.12g",
            f"rerun {segment / 'frames.lammpstrj'} last {last} dump x y z box yes",
        ]:
            lmp.command(command)
    finally:
        lmp.close()
    n = water.topology.n_atoms
    blocks = (out / "forces.dump").read_text().split("ITEM: TIMESTEP")[1:]
    forces = np.array([np.loadtxt(block.splitlines()[9 : 9 + n])[:, 1:] for block in blocks])
    energies, in_table = [], False
    for line in (out / "log.lammps").read_text().splitlines():
        words = line.split()
        if words == ["Step", "PotEng"]:
            in_table = True
        elif in_table and len(words) == 2 and words[0].isdigit():
            energies.append(float(words[1]))
        else:
            in_table = False
    assert len(forces) == N_FRAMES and len(energies) == N_FRAMES
    return frames, np.array(energies), forces


def test_matches_lammps_coul_long_pppm(water, electrostatics, lammps_coulomb):
    frames, ref_energies, ref_forces = lammps_coulomb
    for k, ref_e, ref_f in zip(frames, ref_energies, ref_forces):
        energy, forces = electrostatics(torch.from_numpy(water.positions[k]).double(), torch.from_numpy(water.cells[k]))
        assert np.abs(forces.numpy() - ref_f).mean() < 0.01
        assert float(energy) == pytest.approx(ref_e, abs=0.05)
    # the intramolecular exclusions are what make it match: without them it is far off
    settings = {k: v for k, v in electrostatics.config().items() if k != "special"}
    plain = Electrostatics(water.topology.charges, **settings)
    _, forces = plain(torch.from_numpy(water.positions[frames[0]]).double(), torch.from_numpy(water.cells[frames[0]]))
    assert np.abs(forces.numpy() - ref_forces[0]).mean() > 1.0


def test_special_pairs_and_charges(water, argon_run):
    pairs, factors = special_pairs(water.topology)
    n_molecules = len(np.unique(water.topology.molecules))
    assert len(pairs) == 3 * n_molecules and np.all(factors == 0.0)  # two O-H bonds and one H-H per water
    assert np.all(water.topology.molecules[pairs[:, 0]] == water.topology.molecules[pairs[:, 1]])
    argon = load_frames(argon_run)
    assert has_charges(water.topology) and not has_charges(argon.topology)
    with pytest.raises(ValueError, match="no charges"):
        system_electrostatics(argon)
    # a PME-trained model used zero-shot on argon: no Coulomb term to add, the network alone
    model = NequIP(channels=4, layers=1)
    config = system_electrostatics(water).config()
    assert isinstance(with_coulomb(model, config, water.topology, water.cells[0]), WithCoulomb)
    assert with_coulomb(model, config, argon.topology, argon.cells[0]) is model


def test_forces_are_minus_energy_gradient(water, electrostatics):
    positions = torch.from_numpy(water.positions[5]).double()
    cell = torch.from_numpy(water.cells[5]).double()
    _, forces = electrostatics(positions, cell)
    step = 1e-5
    for atom, axis in [(0, 0), (1, 2), (40, 1)]:
        moved = [positions.clone(), positions.clone()]
        moved[0][atom, axis] += step
        moved[1][atom, axis] -= step
        with torch.no_grad():
            plus, minus = (float(electrostatics.energy(p, cell)) for p in moved)
        assert -(plus - minus) / (2 * step) == pytest.approx(float(forces[atom, axis]), rel=1e-6, abs=1e-6)


def test_cache_and_inference_sum(water, electrostatics, tmp_path):
    first = water.subset(np.arange(4))
    cache = coulomb_cache(first, tmp_path, electrostatics, progress=False)
    assert cache.path is not None and cache.path.is_file()
    again = coulomb_cache(first, tmp_path, electrostatics, progress=False)
    assert again.path == cache.path and np.array_equal(again.forces, cache.forces)
    moved = water.subset(np.arange(4))
    moved.positions = moved.positions + np.float32(0.01)
    assert coulomb_cache(moved, tmp_path, electrostatics, progress=False).path != cache.path

    # a checkpoint's config rebuilds the same calculator
    rebuilt = Electrostatics.from_config(water.topology, electrostatics.config())
    _, forces = rebuilt(torch.from_numpy(first.positions[1]).double(), torch.from_numpy(first.cells[1]))
    assert np.allclose(forces.numpy(), cache.forces[1], atol=1e-4)

    # scale/shift fitted on reference minus Coulomb of a split: the same as on that split's own frames
    train = [0, 2, 3]
    fits = []
    for data, coulomb, indices in ((first, cache, train), (first.subset(train), cache.subset(train), None)):
        model = NequIP(channels=4, l_max=1, layers=1, cutoff=4.0)
        fits.append(model.fit_scale_shift(data, coulomb=coulomb, indices=indices))
    assert np.allclose(fits[0]["type_scale"], fits[1]["type_scale"], rtol=1e-12)
    assert np.allclose(fits[0]["type_shift"], fits[1]["type_shift"], rtol=1e-12)
    features = water.topology.node_features.astype(np.float64)
    remainder = first.forces[train].astype(np.float64) - cache.forces[train]
    for key, scale in zip(fits[0]["type_keys"], fits[0]["type_scale"]):
        atoms = np.all(np.abs(features - np.array(key)) < 1e-6, axis=1)
        assert scale == pytest.approx(np.sqrt(np.mean(remainder[:, atoms] ** 2)), rel=1e-5)

    # the cache lines up with the batches the trainer sees, and WithCoulomb adds the same numbers back
    batch = next(iter(make_loader(FrameDataset(first, 4.0, indices=[2, 0]), batch_size=2)))
    cached_forces, cached_energies = cache.for_batch(batch)
    with torch.no_grad():
        learned = model(batch)
        total = WithCoulomb(model, electrostatics)(batch)
    assert torch.allclose(total["forces"] - learned["forces"], cached_forces, atol=1e-4)
    assert torch.allclose(total["energy"].double() - learned["energy"].double(), cached_energies, atol=1e-3)


def test_chunked_forward_is_energy_and_its_gradient(water, electrostatics):
    """forward (k-space spread and interpolated a chunk of atoms at a time, the real-space sum a chunk of
    pairs at a time, analytic pair forces) gives what energy() and its autograd give, to round-off."""
    positions = torch.from_numpy(water.positions[3]).double()
    cell = torch.from_numpy(water.cells[3]).double()
    lean = Electrostatics.from_config(water.topology, electrostatics.config())
    lean.pair_chunk, lean.atom_chunk = 500, 7
    (i, _, _), special = lean._real_space_pairs(positions.numpy(), cell.numpy())
    assert len(i) > 4 * lean.pair_chunk and water.topology.n_atoms > 4 * lean.atom_chunk and special.any()
    energy, forces = lean(positions, cell)
    moving = positions.clone().requires_grad_(True)
    reference = electrostatics.energy(moving, cell)
    (gradient,) = torch.autograd.grad(reference, moving)
    assert float(energy) == pytest.approx(float(reference.detach()), rel=1e-10)
    assert torch.allclose(forces, -gradient, rtol=1e-10, atol=1e-10 * float(gradient.abs().max()))
    # the k-space part is what torch-pme's calculator gives for an empty neighbour list
    kspace, kspace_forces = lean._kspace(positions, cell)
    moving = positions.clone().requires_grad_(True)
    potential = lean.calculator(
        charges=lean.charges,
        cell=cell,
        positions=moving,
        neighbor_indices=torch.zeros((0, 2), dtype=torch.int64),
        neighbor_distances=torch.zeros(0, dtype=torch.float64),
    )
    reference = (lean.charges * potential).sum()
    (gradient,) = torch.autograd.grad(reference, moving)
    assert float(kspace) == pytest.approx(float(reference.detach()), rel=1e-10)
    assert torch.allclose(kspace_forces, -gradient, rtol=1e-10, atol=1e-10 * float(gradient.abs().max()))
    # float32 in, float32 out
    energy32, forces32 = lean(positions.float(), cell.float())
    assert energy32.dtype == forces32.dtype == torch.float32 and torch.allclose(
        forces32.double(), forces, rtol=1e-4, atol=1e-3
    )
