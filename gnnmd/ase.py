"""A gnnmd checkpoint as an ASE calculator: energy, forces and stress of an `ase.Atoms` in ASE's units
(eV, eV/A, eV/A^3), for ASE's relaxations, MD and analysis.

    from gnnmd.ase import GnnmdCalculator
    atoms.calc = GnnmdCalculator(model="best.pt", topology="data/water")   # or a LAMMPS data file

gnnmd's atoms are described by their physical parameters and bonds, which an `Atoms` does not carry: they
come from `topology`, a LAMMPS data file of the system (or a gnnmd dataset folder, whose first segment's
data file is taken). The Atoms must hold the same atoms in the same order (the data file's atom-id order)
in a periodic cell. A model trained with PME gets its Coulomb part from torch-pme, as in evaluation; the
stress is minus the virial over the volume, the learned part's from the energy model and the Coulomb
part's by differentiating torch-pme's energy under a strain of positions and cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.units import kcal, mol

from gnnmd.data.reader import read_manifest, read_topology
from gnnmd.data.topology import Topology
from gnnmd.inference.forces import ModelForces, with_coulomb

KCAL_PER_MOL = kcal / mol  # in eV


def _topology(topology) -> Topology:
    if isinstance(topology, Topology):
        return topology
    path = Path(topology)
    if path.is_dir():
        return read_topology(path / read_manifest(path)["segments"][0]["data_file"])
    return read_topology(path)


class GnnmdCalculator(Calculator):
    """ASE calculator of a gnnmd checkpoint for one system (see the module's doc). Direct-force models
    (mpnn, eqforce) give forces only; the energy model gives energy, forces and stress."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, topology, device: str = "cpu", allow_unknown_types: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.topology = _topology(topology)
        self.forces_of = ModelForces(model, self.topology, str(topology), allow_unknown_types, electrostatics=False,
                                     device=device)  # fmt: skip
        self.forces_of.virial = self.forces_of.supports_virial
        self.pme = self.forces_of.info.get("electrostatics")
        self.coulomb = None  # set up on the first cell

    def _coulomb(self, positions, cell):
        """(energy, forces, virial) of the PME Coulomb part, kcal/mol units; None for a model without it."""
        if self.coulomb is None:
            wrapped = with_coulomb(self.forces_of.model, self.pme, self.topology, cell)
            self.coulomb = getattr(wrapped, "electrostatics", False)  # False: no charges, no Coulomb
        if not self.coulomb:
            return None
        energy, forces = self.coulomb(torch.from_numpy(positions), torch.from_numpy(cell))
        return float(energy), forces.numpy(), self.coulomb.virial(positions, cell)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if len(atoms) != self.topology.n_atoms:
            raise ValueError(f"the Atoms have {len(atoms)} atoms, the topology {self.topology.n_atoms}")
        if not all(atoms.pbc) or atoms.cell.rank < 3:
            raise ValueError("gnnmd models are periodic: the Atoms need a full cell and pbc=True")
        positions, cell = atoms.positions.astype(np.float64), atoms.cell.array.astype(np.float64)
        forces, energy = self.forces_of(positions, cell)
        virial = self.forces_of.last_virial if self.forces_of.virial else None
        if self.pme:
            coulomb = self._coulomb(positions, cell)
            if coulomb is not None:
                forces = forces + coulomb[1]
                energy = None if energy is None else energy + coulomb[0]
                virial = None if virial is None else virial + coulomb[2]
        self.results["forces"] = forces * KCAL_PER_MOL
        if energy is not None:
            self.results["energy"] = self.results["free_energy"] = energy * KCAL_PER_MOL
        if virial is not None:
            stress = -virial * KCAL_PER_MOL / atoms.get_volume()
            self.results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt: xx yy zz yz xz xy
        missing = [p for p in properties if p not in self.results]
        if missing:
            raise PropertyNotImplementedError(f"a {self.forces_of.info['family']} model gives no {', '.join(missing)}")
