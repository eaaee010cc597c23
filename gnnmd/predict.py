"""A checkpoint as a force function of one system: positions and cell in, forces (and energy) out.
Used wherever a trained model meets raw coordinates: MD inside LAMMPS, interaction probes."""

from __future__ import annotations

import numpy as np
import torch

from gnnmd.data.graphs import GraphBuilder


def check_types_known(topology, type_table: list[dict], source: str, system: str) -> None:
    """Every atom type of the system must be one the model was trained on, matched by its physical
    parameters (charge, epsilon, sigma); the model never saw anything else."""
    known = [(t["charge"], t["epsilon"], t["sigma"]) for t in type_table]
    for row in topology.type_table():
        params = (row["charge"], row["epsilon"], row["sigma"])
        if not any(np.allclose(params, k, atol=1e-6) for k in known):
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
        from gnnmd.memory import keep_freed_memory
        from gnnmd.train.checkpoint import load_model

        keep_freed_memory()  # every step allocates the same tensors again: keep them mapped
        self.model, self.info = load_model(checkpoint)
        if not allow_unknown_types:
            check_types_known(topology, self.info["type_table"], str(checkpoint), system)
        self.builder = GraphBuilder(topology, self.info["cutoff"])
        self.topology = topology
        self.electrostatics = self.info.get("electrostatics") if electrostatics else None
        self.with_coulomb = None  # PME set up on the first cell seen

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, float | None]:
        from gnnmd.models.electrostatics import with_coulomb

        if self.with_coulomb is None:
            self.with_coulomb = with_coulomb(self.model, self.electrostatics, self.topology, cell)
        graph = self.builder(positions, cell)
        context = torch.enable_grad() if getattr(self.model, "needs_grad", False) else torch.no_grad()
        with context:
            out = self.with_coulomb(graph)
        forces = out["forces"].detach().double().numpy()
        energy = out.get("energy")
        return forces, None if energy is None else float(energy.detach().sum())
