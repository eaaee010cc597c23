"""A checkpoint as a force function of one system: positions and cell in, forces (and energy) out.
Used wherever a trained model meets raw coordinates: MD inside LAMMPS, interaction probes, evaluation.
A model that learned reference minus Coulomb gets its PME Coulomb added back here (`with_coulomb`)."""

from __future__ import annotations

import numpy as np
import torch

from gnnmd.data.graphs import GraphBuilder
from gnnmd.data.topology import same_type
from gnnmd.memory import keep_freed_memory
from gnnmd.models.checkpoint import load_model
from gnnmd.models.electrostatics import Electrostatics, has_charges


def check_types_known(topology, type_table: list[dict], source: str, system: str) -> None:
    """Every atom type of the system must be one the model was trained on, matched by its physical
    parameters (charge, epsilon, sigma); the model never saw anything else."""
    known = [(t["charge"], t["epsilon"], t["sigma"]) for t in type_table]
    for row in topology.type_table():
        params = (row["charge"], row["epsilon"], row["sigma"])
        if not any(same_type(params, k) for k in known):
            names = ", ".join(
                f"{t['name']} (q={t['charge']}, eps={t['epsilon']}, sigma={t['sigma']})" for t in type_table
            )
            raise ValueError(
                f"{system}: atom type {row['type_id']} ({row['name']}: q={row['charge']}, eps={row['epsilon']}, "
                f"sigma={row['sigma']}) is unknown to the model in {source}, which knows {names}"
            )


class ModelForces:
    """Forces (kcal/mol/A) and energy (kcal/mol, None for direct-force models) of a checkpoint's model
    for positions and a cell of one system."""

    def __init__(
        self,
        checkpoint,
        topology,
        system: str = "system",
        allow_unknown_types: bool = False,
        electrostatics: bool = True,
    ):
        keep_freed_memory()  # every step allocates the same tensors again: keep them mapped
        self.model, self.info = load_model(checkpoint)
        if not allow_unknown_types:
            check_types_known(topology, self.info["type_table"], str(checkpoint), system)
        self.builder = GraphBuilder(topology, self.model.cutoff)
        self.topology = topology
        self.electrostatics = self.info.get("electrostatics") if electrostatics else None
        self.with_coulomb = None  # PME set up on the first cell seen (or by `prepare`)

    def prepare(self, cell: np.ndarray) -> None:
        """Set up what depends on the system's cell once (the PME mesh), before the first call."""
        self.with_coulomb = with_coulomb(self.model, self.electrostatics, self.topology, cell)

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, float | None]:
        if self.with_coulomb is None:
            self.prepare(cell)
        graph = self.builder(positions, cell)
        context = torch.enable_grad() if getattr(self.model, "needs_grad", False) else torch.no_grad()
        with context:
            out = self.with_coulomb(graph)
        forces = out["forces"].detach().double().numpy()
        energy = out.get("energy")
        return forces, None if energy is None else float(energy.detach().sum())


class WithCoulomb(torch.nn.Module):
    """A model (any family) plus PME Coulomb: energies and forces summed per graph, for inference.

    All graphs of a batch must be frames of the system `electrostatics` was built for."""

    def __init__(self, model: torch.nn.Module, electrostatics: Electrostatics):
        super().__init__()
        self.model = model
        self.electrostatics = electrostatics
        self.family = getattr(model, "family", None)
        self.needs_grad = getattr(model, "needs_grad", False)

    def forward(self, batch) -> dict:
        out = dict(self.model(batch))
        n_graphs = int(getattr(batch, "num_graphs", 1) or 1)
        ptr = getattr(batch, "ptr", None)
        ptr = ptr.tolist() if ptr is not None else [0, batch.num_nodes]
        cells = batch.cell.reshape(-1, 3, 3)
        energies, forces = [], []
        for g in range(n_graphs):
            e, f = self.electrostatics(batch.pos[ptr[g] : ptr[g + 1]].to(torch.float64), cells[g])
            energies.append(e)
            forces.append(f)
        forces = torch.cat(forces).to(out["forces"].dtype)
        out["forces"] = out["forces"] + forces
        out["coulomb_forces"] = forces
        energies = torch.stack(energies)
        if "energy" in out and out["energy"] is not None:
            out["energy"] = out["energy"] + energies.to(out["energy"].dtype)
        out["coulomb_energy"] = energies
        return out


def with_coulomb(model: torch.nn.Module, config: dict | None, topology, cell) -> torch.nn.Module:
    """The model as trained (`config` None) or, for a model that learned reference minus Coulomb (a
    checkpoint's `electrostatics` settings), model + PME Coulomb for this system (one representative cell).
    A system without charges (argon, zero-shot) has no Coulomb term: the model alone."""
    if config is None or not has_charges(topology):
        return model
    return WithCoulomb(model, Electrostatics.for_system(topology, cell, config))
