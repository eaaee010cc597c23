"""The contract every model family keeps (each entry of gnnmd.models.MODELS, at a small size), on real
LAMMPS frames of water (and argon): the symmetries of physical forces, batching, checkpoints and, for
energy models, forces = -dE/dr.

Each geometric check rebuilds the graph from transformed coordinates (what the model meets in use), and
runs in float32 (tolerance 1e-4 of the force scale: the largest reference force or the model's force_scale,
whichever is larger) and in float64 (1e-10), where graphs carry float64 positions, cells and edge geometry.
A new family added to MODELS is held to all of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gnnmd.data import GraphBuilder, Topology, load_frames, make_loader, replicate
from gnnmd.data.graphs import DISTANCE, UNIT_VECTOR
from gnnmd.models import MODELS, build_model
from gnnmd.models.checkpoint import load_model, save_checkpoint
from gnnmd.train.augment import rotate_batch

CUTOFF = 4.0
# small networks, so the whole contract runs in seconds; a family not listed is built with its defaults
SMALL = {
    "mpnn": {"hidden": 16, "mlp_layers": 2, "layers": 2},
    "eqforce": {"hidden": 16, "mlp_layers": 2, "layers": 2, "radial": 8},
    "nequip": {"channels": 8, "l_max": 1, "layers": 2, "n_basis": 6, "radial_hidden": 16},
}
FAMILIES = sorted(MODELS)
ENERGY_FAMILIES = [family for family in FAMILIES if MODELS[family].needs_grad]
PRECISIONS = [pytest.param(torch.float32, 1e-4, id="float32"), pytest.param(torch.float64, 1e-10, id="float64")]
SHIFT = np.array([3.7, -11.2, 25.0])


@pytest.fixture(scope="module")
def water(water_run):
    return load_frames(water_run)


@pytest.fixture(scope="module")
def argon(argon_run):
    return load_frames(argon_run)


@pytest.fixture(scope="module")
def models(water):
    """(family, dtype) -> one small model, set up as the trainer does (normalisation, then fitted priors),
    in eval mode; built once (the float64 one is the float32 one converted), as the tests only evaluate it."""
    built = {}

    def get(family, dtype=torch.float32):
        if (family, dtype) not in built:
            torch.manual_seed(0)
            model = build_model(family, cutoff=CUTOFF, **SMALL.get(family, {}))
            model.set_normalisation(normalisation(water))
            model.fit_priors(water)
            built[family, dtype] = model.to(dtype).eval()
        return built[family, dtype]

    return get


def normalisation(frames) -> dict:
    return {
        "force_scale": float(np.sqrt(np.mean(frames.forces.astype(np.float64) ** 2))),
        "energy_shift": float(frames.energies.mean() / frames.topology.n_atoms),
    }


def rotation(seed: int, mirror: bool = False) -> np.ndarray:
    """A random rotation (float64), times a reflection if `mirror`."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q @ np.diag([-1.0, 1.0, 1.0]) if mirror else q


def graph_of(topology, positions, cell, dtype):
    """The graph of one frame, as a model of `dtype` is fed it: the builder's own graph in float32; in
    float64 with positions, cell and edge geometry (vectors, distances, directions) from the float64 input."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    graph = GraphBuilder(topology, CUTOFF)(positions, cell)
    if dtype == torch.float32:
        return graph
    pos = torch.from_numpy(positions)
    cell64 = torch.from_numpy(cell)
    j, i = graph.edge_index
    shift = graph.edge_shift.double()
    vectors = pos[j] - pos[i] + shift @ cell64
    distance = vectors.norm(dim=1, keepdim=True)
    attr = graph.edge_attr.double()
    attr = torch.cat([attr[:, :DISTANCE], distance, vectors / distance, attr[:, UNIT_VECTOR.stop :]], dim=1)
    graph.pos, graph.cell, graph.x = pos, cell64.reshape(1, 3, 3), graph.x.double()
    graph.edge_vec, graph.edge_attr, graph.edge_shift = vectors, attr, shift
    return graph


def predict(model, graph) -> dict:
    """The model's output, evaluated as gnnmd evaluates (with grad for models that need it), detached."""
    with torch.enable_grad() if model.needs_grad else torch.no_grad():
        out = model(graph)
    return {key: value.detach() for key, value in out.items()}


def run(model, topology, positions, cell, dtype) -> dict:
    return predict(model, graph_of(topology, positions, cell, dtype))


def frame(frames, k=0):
    return frames.topology, frames.positions[k].astype(np.float64), frames.cells[k].astype(np.float64)


def assert_close(actual, expected, rel, what, floor=0.0):
    """max |actual - expected| <= rel * scale, the scale being max |expected| or `floor` if larger. Forces
    pass the model's force_scale as floor: a network computes in those units, so that is what its rounding
    is relative to (untrained models give argon forces of ~ 1e-3 of it)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(float(expected.abs().max()), floor)
    error = float((actual - expected).abs().max())
    assert error <= rel * scale, f"{what}: max error {error:.3g} > {rel:g} x {scale:.3g}"


def assert_meaningful(forces, dtype):
    """Forces nonzero, finite and different per atom, so the comparisons made with them mean something."""
    assert forces.dtype == dtype and forces.ndim == 2 and forces.shape[1] == 3
    assert torch.isfinite(forces).all()
    assert float(forces.abs().mean()) > 1e-3  # kcal/mol/A (untrained models on argon give ~ 0.01)
    assert float(forces.std(dim=0).min()) > 1e-3


# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mirror", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize("dtype, rel", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_rotation_equivariance(models, water, family, dtype, rel, mirror):
    """A family that declares `equivariant = True` (the trainer then does not augment it) turns its forces
    with the frame: F(R x) = R F(x), R a rotation or a reflection (E(3)). Any other family must declare
    `equivariant = False`, so that the trainer trains it on randomly rotated frames; for every family the
    trainer's rotation (rotate_batch) must give the same prediction as the rotated frame's rebuilt graph."""
    model = models(family, dtype)
    scale = float(model.force_scale)
    topology, positions, cell = frame(water)
    forces = run(model, topology, positions, cell, dtype)["forces"]
    assert_meaningful(forces, dtype)
    turn = rotation(1, mirror)
    turned_cell = cell @ turn.T
    if mirror:
        turned_cell[0] = -turned_cell[0]  # the same lattice, spanned by a right-handed cell again
    turned = run(model, topology, positions @ turn.T, turned_cell, dtype)["forces"]
    if not mirror:
        augmented = rotate_batch(graph_of(topology, positions, cell, dtype), torch.from_numpy(turn)[None].to(dtype))
        assert_close(
            predict(model, augmented)["forces"], turned, rel, "rotate_batch vs rebuilt rotated graph", floor=scale
        )
    if type(model).equivariant is not True:
        assert type(model).equivariant is False, f"{family}.equivariant must be True or False"
        return
    expected = forces @ torch.from_numpy(turn.T).to(dtype)
    assert_close(
        turned, expected, rel, f"{family} forces of the {'reflected' if mirror else 'rotated'} frame", floor=scale
    )


@pytest.mark.parametrize("dtype, rel", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_translation_invariance(models, water, family, dtype, rel):
    """Moving every atom by one vector (outside the box: the builder wraps) changes no force nor energy."""
    model = models(family, dtype)
    scale = float(model.force_scale)
    topology, positions, cell = frame(water, 1)
    out = run(model, topology, positions, cell, dtype)
    moved = run(model, topology, positions + SHIFT, cell, dtype)
    assert_meaningful(out["forces"], dtype)
    assert_close(moved["forces"], out["forces"], rel, "forces of the translated frame", floor=scale)
    if "energy" in out:
        assert_close(moved["energy"], out["energy"], rel, "energy of the translated frame")


def permuted(topology: Topology, perm: np.ndarray) -> Topology:
    """The same system with atoms renumbered: new atom k is old atom perm[k]; bonds and angles follow."""
    new_index = np.argsort(perm)
    per_atom = {name: getattr(topology, name)[perm] for name in ("types", "charges", "epsilon", "sigma", "molecules")}
    table = {f.name: getattr(topology, f.name) for f in dataclasses.fields(topology) if f.name.startswith("table_")}
    return Topology(**per_atom, **table, bonds=new_index[topology.bonds], angles=new_index[topology.angles])


@pytest.mark.parametrize("dtype, rel", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_permutation_equivariance(models, water, family, dtype, rel):
    """Renumbering the atoms (positions, per-atom parameters, molecules, bonds, angles all consistently)
    renumbers the forces the same way and leaves the energy unchanged."""
    model = models(family, dtype)
    scale = float(model.force_scale)
    topology, positions, cell = frame(water, 2)
    perm = np.random.default_rng(3).permutation(topology.n_atoms)
    renumbered = permuted(topology, perm)
    assert len(renumbered.bonds) == len(topology.bonds) > 0 and renumbered.n_atoms == topology.n_atoms
    out = run(model, topology, positions, cell, dtype)
    out_perm = run(model, renumbered, positions[perm], cell, dtype)
    assert_meaningful(out["forces"], dtype)
    assert_close(
        out_perm["forces"], out["forces"][torch.from_numpy(perm)], rel, "forces of the renumbered frame", floor=scale
    )
    if "energy" in out:
        assert_close(out_perm["energy"], out["energy"], rel, "energy of the renumbered frame")


@pytest.mark.parametrize("system", ["water", "argon"])
@pytest.mark.parametrize("dtype, rel", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_periodic_images(models, water, argon, family, dtype, rel, system):
    """A 2x2x2 supercell of a periodic frame (molecules made whole, so atoms sit at other images) is the
    same crystal: every copy of an atom feels that atom's force, and an energy is 8x the frame's."""
    model = models(family, dtype)
    scale = float(model.force_scale)
    topology, positions, cell = frame(water if system == "water" else argon, 3)
    out = run(model, topology, positions, cell, dtype)
    assert_meaningful(out["forces"], dtype)
    big = run(model, *replicate(topology, positions, cell, (2, 2, 2)), dtype)
    copies = big["forces"].reshape(8, topology.n_atoms, 3)
    assert_close(copies, out["forces"].expand(8, -1, -1), rel, "forces of the 2x2x2 supercell's copies", floor=scale)
    if "energy" in out:
        assert_close(big["energy"], 8 * out["energy"], rel, "energy of the 2x2x2 supercell")


@pytest.mark.parametrize("partner", ["water", "argon"])
@pytest.mark.parametrize("dtype, rel", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_batch_invariance(models, water, argon, family, dtype, rel, partner):
    """A batch of two graphs (water with another water frame of another NPT cell, or with argon: other
    atoms, sizes and cell) gives each graph the forces and energy it has alone."""
    model = models(family, dtype)
    scale = float(model.force_scale)
    first = graph_of(*frame(water, 0), dtype)
    second = graph_of(*(frame(water, 11) if partner == "water" else frame(argon, 0)), dtype)
    assert not torch.equal(first.cell, second.cell)
    batch = next(iter(make_loader([first, second], batch_size=2)))
    assert batch.num_graphs == 2
    together = predict(model, batch)
    alone = [predict(model, first), predict(model, second)]
    for out in alone:
        assert_meaningful(out["forces"], dtype)
    assert_close(
        together["forces"], torch.cat([out["forces"] for out in alone]), rel, "forces of the batch", floor=scale
    )
    if model.needs_grad:
        assert together["energy"].shape == (2,) and alone[0]["energy"].shape == (1,)
    if "energy" in together:
        assert_close(together["energy"], torch.cat([out["energy"] for out in alone]), rel, "energies of the batch")


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_round_trip(models, water, argon, family, tmp_path):
    """save_checkpoint then load_model rebuilds the family with its hyper-parameters, cutoff, normalisation
    and fitted priors: bit-identical predictions on water and on argon."""
    model = models(family)
    path = save_checkpoint(
        tmp_path / f"{family}.pt", model, type_table=water.topology.type_table(), normalisation=normalisation(water)
    )
    loaded, info = load_model(path, family=family)
    assert type(loaded) is MODELS[family] and not loaded.training
    assert info.family == family and info.hyper == model.hyper and loaded.cutoff == model.cutoff == CUTOFF
    for frames in (water, argon):
        graph = graph_of(*frame(frames, 4), torch.float32)
        out, out_loaded = predict(model, graph), predict(loaded, graph)
        assert_meaningful(out["forces"], torch.float32)
        assert out.keys() == out_loaded.keys()
        for key in out:
            assert torch.equal(out_loaded[key], out[key]), f"{family} {key} after save/load"


@pytest.mark.parametrize("family", ENERGY_FAMILIES)
def test_forces_are_minus_energy_gradient(models, water, family):
    """An energy model's forces are -dE/dr: central differences of its energy (float64, step 1e-5 A, the
    graph rebuilt at each displaced position) agree to 1e-6 of the largest force, for 12 coordinates."""
    model = models(family, torch.float64)
    topology, positions, cell = frame(water, 5)
    forces = run(model, topology, positions, cell, torch.float64)["forces"]
    assert_meaningful(forces, torch.float64)
    step = 1e-5
    atoms = np.random.default_rng(0).choice(topology.n_atoms, 4, replace=False)
    numeric, analytic = [], []
    for atom in atoms:
        for axis in range(3):
            energies = []
            for sign in (1.0, -1.0):
                moved = positions.copy()
                moved[atom, axis] += sign * step
                energies.append(float(run(model, topology, moved, cell, torch.float64)["energy"][0]))
            numeric.append(-(energies[0] - energies[1]) / (2 * step))
            analytic.append(float(forces[atom, axis]))
    error = np.abs(np.array(numeric) - np.array(analytic)).max()
    assert error <= 1e-6 * float(forces.abs().max()), f"finite differences differ by {error:.3g}"


@pytest.mark.parametrize("family", ENERGY_FAMILIES)
def test_energy_invariant_under_rotation(models, water, argon, family):
    """An energy model's energy is a scalar: three random rotations and a reflection of a water and an
    argon frame (float64) leave it unchanged to 1e-10 of it, while moving one atom by 0.05 A changes it."""
    model = models(family, torch.float64)
    for frames in (water, argon):
        topology, positions, cell = frame(frames, 6 % len(frames))
        energy = run(model, topology, positions, cell, torch.float64)["energy"]
        assert energy.shape == (1,) and float(energy.abs()) > 1.0
        nudged = positions.copy()
        nudged[0] += 0.05  # the energy does see the geometry, so an unchanged energy below means something
        assert float((run(model, topology, nudged, cell, torch.float64)["energy"] - energy).abs()) > 1e-6 * float(
            energy.abs()
        )
        for seed, mirror in ((11, False), (12, False), (13, False), (14, True)):
            turn = rotation(seed, mirror)
            turned_cell = cell @ turn.T
            if mirror:
                turned_cell[0] = -turned_cell[0]
            turned = run(model, topology, positions @ turn.T, turned_cell, torch.float64)["energy"]
            assert_close(turned, energy, 1e-10, f"energy after rotation {seed}{' (reflected)' if mirror else ''}")
