"""A gnnmd checkpoint as an ASE calculator: energy, forces and stress of an `ase.Atoms` in ASE's units
(eV, eV/A, eV/A^3), for ASE's relaxations, MD and analysis.

    from gnnmd.ase import GnnmdCalculator
    atoms.calc = GnnmdCalculator(model="best.pt", topology="data/water")   # or a LAMMPS data file

gnnmd's atoms are described by their physical parameters and bonds, which an `Atoms` does not carry: they
come from `topology`, a LAMMPS data file of the system (or a gnnmd dataset folder, whose first segment's
data file is taken). The Atoms must hold the same atoms in the same order (the data file's atom-id order)
in a periodic cell; other Atoms are refused (their symbols are checked against the elements the data
file's masses name), since the model would give the numbers of another system. A model trained with PME gets its Coulomb part from torch-pme, as in evaluation; the
stress is minus the virial over the volume, the learned part's from the energy model and the Coulomb
part's by differentiating torch-pme's energy under a strain of positions and cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.units import kcal, mol

from gnnmd.data.reader import read_manifest, read_topology
from gnnmd.data.topology import Topology
from gnnmd.inference.forces import ModelForces

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
        self.source = "the topology" if isinstance(topology, Topology) else str(topology)
        self.topology = _topology(topology)
        # the learned part plus, for a PME-trained model, torch-pme's Coulomb: gnnmd's one composition
        self.forces_of = ModelForces(model, self.topology, self.source, allow_unknown_types, device=device)
        self.forces_of.virial = self.forces_of.supports_virial
        names = np.asarray(self.topology.table_names).astype(str)[self.topology.types]
        self.known = ~np.char.startswith(names, "type")  # atoms whose element the data file's masses tell
        self.symbols = names

    def check_atoms(self, atoms) -> None:
        """The Atoms must be the topology's atoms in its order, in a full periodic cell, with finite
        coordinates: anything else gives numbers of another system (or none), so it is refused."""
        where = f"{self.source}: the Atoms"
        if len(atoms) != self.topology.n_atoms:
            raise ValueError(f"{where} have {len(atoms)} atoms, the topology {self.topology.n_atoms}")
        symbols = np.asarray(atoms.get_chemical_symbols())
        wrong = np.flatnonzero(self.known & (symbols != self.symbols))
        if len(wrong):
            k = int(wrong[0])
            raise ValueError(f"{where}' atom {k} is {symbols[k]}, the topology's is {self.symbols[k]} "
                             f"({len(wrong)} atoms differ; the same atoms in the data file's order?)")  # fmt: skip
        if not all(atoms.pbc) or atoms.cell.rank < 3:
            raise ValueError(f"{where} need a full cell and pbc=True: gnnmd models are periodic")
        if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
            raise ValueError(f"{where} have non-finite positions or cell")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.check_atoms(atoms)
        positions, cell = atoms.positions.astype(np.float64), atoms.cell.array.astype(np.float64)
        forces, energy = self.forces_of(positions, cell)
        virial = self.forces_of.last_virial if self.forces_of.virial else None
        self.results["forces"] = forces * KCAL_PER_MOL
        if energy is not None:
            self.results["energy"] = self.results["free_energy"] = energy * KCAL_PER_MOL
        if virial is not None:
            stress = -virial * KCAL_PER_MOL / atoms.get_volume()
            self.results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt: xx yy zz yz xz xy
        missing = [p for p in properties if p not in self.results]
        if missing:
            raise PropertyNotImplementedError(f"a {self.forces_of.info.family} model gives no {', '.join(missing)}")
