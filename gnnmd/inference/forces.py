"""A checkpoint as a force function of one system: positions and cell in, forces (and energy) out.
Used wherever a trained model meets raw coordinates: MD inside LAMMPS, interaction probes, ASE, evaluation.

A model that learned reference minus Coulomb gets its PME Coulomb added back here and nowhere else:
`CoulombPart` decides whether there is one (the checkpoint's PME settings and a system with charges) and
gives its energy, forces and virial; ModelForces (and CommitteeForces) add it per frame, WithCoulomb per
batch of graphs (evaluation). Every caller gets the same sum."""

from __future__ import annotations

import copy

import numpy as np
import torch

from gnnmd.data.graphs import NONBONDED, GraphBuilder, VerletList, model_class_ids
from gnnmd.data.topology import same_type
from gnnmd.devices import resolve_device
from gnnmd.inference.tabulated_nequip import TabulatedNequIP
from gnnmd.inference.tabulated_states import TabulatedPairPart
from gnnmd.memory import keep_freed_memory
from gnnmd.models.checkpoint import load_model
from gnnmd.models.electrostatics import Electrostatics, has_charges


def check_types_known(topology, type_table: list[dict], source: str, system: str) -> None:
    """Every atom type of the system must be one the model was trained on, matched by its physical
    parameters (charge, epsilon, sigma); the model never saw anything else. The one model/system check
    of gnnmd md, gnnmd evaluate and the ASE calculator."""
    known = [(t["charge"], t["epsilon"], t["sigma"]) for t in type_table]
    for row in topology.type_table():
        params = (row["charge"], row["epsilon"], row["sigma"])
        if not any(same_type(params, k) for k in known):
            names = ", ".join(
                f"{t['name']} (q={t['charge']}, eps={t['epsilon']}, sigma={t['sigma']})" for t in type_table
            )
            raise ValueError(
                f"{system}: atom type {row['type_id']} ({row['name']}: q={row['charge']}, eps={row['epsilon']}, "
                f"sigma={row['sigma']}) is unknown to the model in {source}, which knows {names} "
                "(--allow-unknown-types for zero-shot use)"
            )


PRECISIONS = ("float32", "float64")
TABULATED_FAMILIES = ("nequip", "csnequip")  # the energy models with an inference engine (tabulated_*)


def model_dtype(precision: str) -> torch.dtype:
    """The dtype a model computes in for inference: float32 (fast, the default) or float64 (forces
    reproducible to ~1e-10 kcal/mol/A whatever the order of the sums, e.g. on any number of MPI ranks)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return getattr(torch, precision)


class ModelForces:
    """Forces (kcal/mol/A) and energy (kcal/mol, None for direct-force models) of a checkpoint's model
    for positions and a cell of one system.

    The energy model (nequip) runs in its inference form (gnnmd.inference.tabulated_nequip): radial MLPs tabulated
    as splines (forces within ~1e-5 kcal/mol/A of the network's, far below float32 noise), a Verlet
    neighbour list with `skin` (A; rebuilt only when an atom moved more than skin/2 or the cell changed,
    the edge vectors taken from the current positions at every call, so the forces are those of a graph
    built afresh), and everything that depends on the atom types alone computed once. `tabulate=False`
    evaluates the network itself on a graph built at every call, as training and evaluation do. `device`
    (gnnmd.devices) is where the model computes, in `precision` (model_dtype); positions and forces come and
    go as CPU numpy arrays."""

    def __init__(
        self,
        checkpoint,
        topology,
        system: str = "system",
        allow_unknown_types: bool = False,
        electrostatics: bool = True,
        tabulate: bool = True,
        skin: float = 1.0,
        device: str = "cpu",
        precision: str = "float32",
    ):
        keep_freed_memory()  # every step allocates the same tensors again: reuse the freed blocks
        self.device = resolve_device(device)
        self.model, self.info = load_model(checkpoint)
        self.model = self.model.to(self.device, model_dtype(precision))
        if not allow_unknown_types:
            check_types_known(topology, self.info.type_table, str(checkpoint), system)
        self.model.check_system(topology, f"{checkpoint} on {system}: ")
        self.builder = GraphBuilder(topology, self.model.cutoff)
        self.topology = topology
        self.electrostatics = self.info.electrostatics if electrostatics else None
        self.coulomb: CoulombPart | None = None  # the PME Coulomb part, set up on the first cell (or by `prepare`)
        self.prepared = False
        self.engine = None
        self.virial = False  # set True to have `last_virial` (3x3, kcal/mol: -dE/d strain) of each call
        self.last_virial: np.ndarray | None = None
        self.wall_active = False  # whether a wall acted in the last call (a pair outside the training distances)
        self.wall_contacts: int | None = None  # calls in which one did (None: not counted, no walls or untabulated)
        self.pair_part = None  # csnequip's pair part (TabulatedPairPart) and its own neighbour list
        if tabulate and getattr(self.model, "needs_grad", False) and self.model.family in TABULATED_FAMILIES:
            self.engine = TabulatedNequIP(self.model)
            self.dtype = self.model.type_scale.dtype
            states = self.model.family == "csnequip"  # NequIP on the pairs within a molecule only
            self.verlet = VerletList(self.builder, skin, self.device, self.dtype, molecular_only=states)
            self.atoms = self.engine.atoms(torch.from_numpy(topology.node_features).to(self.device))
            if states:
                self.pair_part = TabulatedPairPart(self.model, topology).to(self.device)
                self.pair_list = VerletList(self.builder, skin, self.device, self.dtype, self.pair_part.reach,
                                            atoms=self.pair_part.atoms)  # fmt: skip

    @property
    def supports_virial(self) -> bool:
        """Whether `virial = True` gives a virial: the tabulated energy model's path."""
        return self.engine is not None

    def prepare(self, cell: np.ndarray) -> None:
        """Set up what depends on the system's cell once (the PME mesh), before the first call."""
        self.coulomb = CoulombPart.of(self.electrostatics, self.topology, cell)
        self.coulomb = None if self.coulomb is None else self.coulomb.to(self.device)
        self.prepared = True

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Forces and energy of the learned part plus the Coulomb part (if any); with `virial`, the sum's
        virial in `last_virial`."""
        positions, cell = np.asarray(positions, dtype=np.float64), np.asarray(cell, dtype=np.float64)
        if not self.prepared:
            self.prepare(cell)
        if self.engine is not None:
            forces, energy = self._tabulated(positions, cell)
        else:
            forces, energy = self._network(positions, cell)
        if self.coulomb is not None:
            virial = self.last_virial if self.virial and self.engine is not None else None
            forces, energy, virial = self.coulomb.add(positions, cell, forces, energy, virial)
            self.last_virial = virial if virial is not None else self.last_virial
        return forces, energy

    def _network(self, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The network itself on a graph built afresh (direct-force models, or tabulate=False)."""
        graph = self.builder(positions, cell).to(self.device)
        context = torch.enable_grad() if getattr(self.model, "needs_grad", False) else torch.no_grad()
        with context:
            out = self.model(graph)
        forces = out["forces"].detach().double().cpu().numpy()
        energy = out.get("energy")
        return forces, None if energy is None else float(energy.detach().sum())

    def _tabulated(self, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, float]:
        verlet, engine = self.verlet, self.engine
        if verlet.update(positions, cell):
            self._walls = self._wall_pairs()
        pos = torch.from_numpy(positions).to(self.device, self.dtype)
        near = verlet.within(pos, engine.cutoff)  # the list holds the pairs within cutoff + skin
        if self.pair_part is not None:  # csnequip's nequip: the pairs within a molecule as its classes see them
            classes = model_class_ids(verlet.pair_class.index_select(0, near), engine.model.n_edge_classes)
            near = near[classes != NONBONDED]
        take = [t.index_select(0, near) for t in (verlet.i, verlet.j, verlet.pair_class, verlet.shift_vectors)]
        pairs = engine.pairs(*take[:3], take[3].to(self.dtype))
        with torch.enable_grad():
            pos.requires_grad_(True)
            strain = pos.new_zeros(3, 3, requires_grad=self.virial)  # carries the virial's gradient
            energy = engine.energy(self.atoms, pos, pairs, strain)
            deform = torch.eye(3, dtype=pos.dtype, device=pos.device) + strain
            walls = []  # whether each kind of wall acted
            if self._walls is not None:
                near, core, stretch = self._walls
                wall = engine.wall_energy(torch.linalg.vector_norm(verlet.vectors(pos, near) @ deform, dim=1),
                                          core, stretch)  # fmt: skip
                walls.append(bool(wall.detach() > 0))
                energy = energy + wall
            if self.pair_part is not None and len(self.pair_part.atoms):
                pair_list = self.pair_list
                if pair_list.update(positions, cell):  # the pairs that count, with their special_bonds weights
                    self._pairs_kept, self._pairs_weight = self.pair_part.listed(pair_list)
                kept, i, j = self._pairs_kept, pair_list.i, pair_list.j
                if kept is not None:
                    i, j = i.index_select(0, kept), j.index_select(0, kept)
                vectors = pair_list.vectors(pos, kept) @ deform
                energy = energy + self.pair_part.energy(vectors, i, j, self._pairs_weight)
                walls.append(self.pair_part.core_acted)
            if walls:
                self.wall_active = any(walls)
                self.wall_contacts = (self.wall_contacts or 0) + int(self.wall_active)
            grads = torch.autograd.grad(energy, [pos, strain] if self.virial else [pos])
        forces, energy = -grads[0].double().cpu().numpy(), float(energy.detach())
        if self.virial:  # -dE/d(strain), symmetrised (the energy is rotation invariant)
            derivative = grads[1].double().cpu().numpy()
            self.last_virial = -0.5 * (derivative + derivative.T)
        return forces, energy

    def _wall_pairs(self):
        """(pairs, core, stretch radii) of the pairs of the neighbour list whose walls can act before the
        next rebuild; None if the model has no walls."""
        verlet = self.verlet
        distances = torch.from_numpy(verlet.distances).to(self.device)
        walls = self.engine.walls_within_reach(self.atoms, verlet.i, verlet.j, verlet.pair_class, distances,
                                               verlet.skin + 1e-3)  # fmt: skip
        if walls is None:
            return None
        near, core, stretch = walls
        if self.pair_part is not None:  # csnequip's nequip: only the pairs within a molecule as its classes see them
            inside = model_class_ids(verlet.pair_class.index_select(0, near), self.model.n_edge_classes) != NONBONDED
            near, core, stretch = near[inside], core[inside], stretch[inside]
        return near, core.to(self.dtype), stretch.to(self.dtype)


class CoulombPart(torch.nn.Module):
    """The PME Coulomb part of one system that a model trained on reference minus Coulomb leaves out:
    energy (kcal/mol), forces (kcal/mol/A) and virial (3x3, kcal/mol), computed in float64 on the device
    it is moved to. `of` builds it from a checkpoint's PME settings, or says there is none."""

    def __init__(self, electrostatics: Electrostatics):
        super().__init__()
        self.electrostatics = electrostatics
        self._on_cpu = None  # a CPU copy for the virial when the part lives on another device

    @classmethod
    def of(cls, settings: dict | None, topology, cell) -> CoulombPart | None:
        """The part for this system (mesh chosen for one representative cell), or None: a model trained
        without PME (`settings` None) or a system without charges (argon, zero-shot) has no Coulomb part."""
        if not settings or not has_charges(topology):
            return None
        return cls(Electrostatics.for_system(topology, cell, settings))

    def frame(self, positions: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy, forces) of one frame, float64 tensors on the part's device."""
        device = self.electrostatics.charges.device
        return self.electrostatics(positions.to(device, torch.float64), cell.to(device, torch.float64))

    def virial(self, positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """Minus the strain derivative of the Coulomb energy (symmetrised), computed on the CPU."""
        if self.electrostatics.charges.device.type == "cpu":
            return self.electrostatics.virial(positions, cell)
        if self._on_cpu is None:
            self._on_cpu = copy.deepcopy(self.electrostatics).cpu()
        return self._on_cpu.virial(positions, cell)

    def add(self, positions: np.ndarray, cell: np.ndarray, forces: np.ndarray, energy: float | None,
            virial: np.ndarray | None = None) -> tuple[np.ndarray, float | None, np.ndarray | None]:  # fmt: skip
        """The learned part's forces, energy and virial (None: not computed) plus the Coulomb part's."""
        coulomb_energy, coulomb_forces = self.frame(torch.from_numpy(positions), torch.from_numpy(cell))
        forces = forces + coulomb_forces.cpu().numpy()
        energy = None if energy is None else energy + float(coulomb_energy)
        virial = None if virial is None else virial + self.virial(positions, cell)
        return forces, energy, virial

    def batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(energies (G,), forces (N, 3)) of every graph of a batch of frames of this system."""
        ptr = getattr(batch, "ptr", None)
        ptr = ptr.tolist() if ptr is not None else [0, batch.num_nodes]
        cells = batch.cell.reshape(-1, 3, 3)
        parts = [self.frame(batch.pos[ptr[g] : ptr[g + 1]], cells[g]) for g in range(len(ptr) - 1)]
        return torch.stack([e for e, _ in parts]), torch.cat([f for _, f in parts])


class WithCoulomb(torch.nn.Module):
    """A model (any family) plus its Coulomb part (a CoulombPart, or the Electrostatics of one): energies
    and forces summed per graph, for evaluation. All graphs of a batch must be frames of that system."""

    def __init__(self, model: torch.nn.Module, coulomb: CoulombPart | Electrostatics):
        super().__init__()
        self.model = model
        self.coulomb = coulomb if isinstance(coulomb, CoulombPart) else CoulombPart(coulomb)
        self.family = getattr(model, "family", None)
        self.needs_grad = getattr(model, "needs_grad", False)

    @property
    def electrostatics(self) -> Electrostatics:
        return self.coulomb.electrostatics

    def forward(self, batch) -> dict:
        out = dict(self.model(batch))
        energies, forces = self.coulomb.batch(batch)
        forces = forces.to(out["forces"].dtype)
        out["forces"] = out["forces"] + forces
        out["coulomb_forces"] = forces
        if "energy" in out and out["energy"] is not None:
            out["energy"] = out["energy"] + energies.to(out["energy"].dtype)
        out["coulomb_energy"] = energies
        return out


def with_coulomb(model: torch.nn.Module, config: dict | None, topology, cell) -> torch.nn.Module:
    """The model as trained (no Coulomb part: `CoulombPart.of`) or model + PME Coulomb for this system
    (one representative cell), as a module of graph batches."""
    part = CoulombPart.of(config, topology, cell)
    return model if part is None else WithCoulomb(model, part)
