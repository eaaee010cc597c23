"""A rigid torsion scan: the energy of one molecule alone (in a box far larger than its cutoffs) as one
dihedral turns, from the reference force field (LAMMPS, `run 0` at each angle) and from a model, each
relative to its own lowest point. The barrier (highest minus lowest) is what a learned force field must
get right for a molecule's conformations: the methyl rotation of ethane, the hydroxyl's of methanol.

The side of the central bond that holds the dihedral's last atom turns about that bond; nothing relaxes
(a rigid scan, as the torsion profiles of force-field papers are first drawn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gnnmd.data.frames import make_whole
from gnnmd.data.topology import molecule_topology

BOX = 80.0  # A: the lone molecule's cubic box, beyond any cutoff of a molecule and its images


def dihedral_angle(positions: np.ndarray, quad) -> float:
    """The dihedral angle (degrees, -180..180) of atoms quad = (a, b, c, d)."""
    a, b, c, d = (positions[k] for k in quad)
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - b0 @ b1 * b1, b2 - b2 @ b1 * b1
    return float(np.degrees(np.arctan2(np.cross(b1, v) @ w, v @ w)))


def turned(positions: np.ndarray, topology, quad, angle: float) -> np.ndarray:
    """Positions with the dihedral quad set to `angle` degrees: the atoms bonded on c's side of the b-c bond
    (c itself, d and what hangs on them) turn about the b-c axis."""
    b, c = quad[1], quad[2]
    side, frontier = {c}, [c]
    neighbours = {}
    for i, j in np.asarray(topology.bonds):
        neighbours.setdefault(int(i), []).append(int(j))
        neighbours.setdefault(int(j), []).append(int(i))
    while frontier:
        for n in neighbours.get(frontier.pop(), []):
            if n not in side and n != b:
                side.add(n)
                frontier.append(n)
    if b in side:
        raise ValueError(f"atoms {b} and {c} are in a ring: a rigid scan cannot turn one side of their bond")
    axis = positions[c] - positions[b]
    axis /= np.linalg.norm(axis)
    theta = np.radians(angle - dihedral_angle(positions, quad))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k
    out = positions.copy()
    moving = sorted(side)
    out[moving] = (positions[moving] - positions[c]) @ rotation.T + positions[c]
    return out


def reference_energies(data_file: Path, force_field, molecule: int, atoms: np.ndarray, conformations) -> np.ndarray:
    """LAMMPS' potential energy (kcal/mol) of molecule `molecule` of `data_file` alone in a BOX cube, at
    each conformation (positions of its `atoms`, in the order of `atoms`)."""
    from gnnmd.lammps.engine import load_system_commands, start_lammps

    lmp = start_lammps()
    try:
        lmp.commands_list(
            load_system_commands(data_file, force_field)
            + [f"group keep molecule {int(molecule)}", "group others subtract all keep",
               "delete_atoms group others compress no", f"change_box all x final 0 {BOX} y final 0 {BOX} "
               f"z final 0 {BOX} remap units box", "thermo_style custom step pe"]
        )  # fmt: skip
        energies = []
        ids_of = {int(a) + 1: k for k, a in enumerate(atoms)}  # LAMMPS ids are atom numbers + 1
        for positions in conformations:
            nlocal = lmp.extract_global("nlocal")
            ids = lmp.numpy.extract_atom("id")[:nlocal]
            x = lmp.numpy.extract_atom("x")
            x[:nlocal] = positions[[ids_of[int(i)] for i in ids]] + BOX / 2
            lmp.command("run 0")
            energies.append(lmp.get_thermo("pe"))
    finally:
        lmp.close()
    return np.array(energies)


def torsion_scan(frames, data_file, force_field, quad, angles, checkpoint=None, frame: int = 0) -> dict:
    """The rigid scan of dihedral `quad` (atom numbers of the system) of frame `frame`'s molecule, at
    `angles` (degrees): LAMMPS' energies and, with `checkpoint`, the model's (learned part plus its
    Coulomb part), each minus its lowest, and the two barriers."""
    from gnnmd.inference.forces import ModelForces

    topology = frames.topology
    molecule = int(topology.molecules[quad[0]])
    alone, atoms = molecule_topology(topology, molecule)
    local = [int(np.flatnonzero(atoms == q)[0]) for q in quad]
    start = make_whole(alone, frames.positions[frame][atoms], frames.cells[frame])
    start = start - start.mean(axis=0)
    conformations = [turned(start, alone, local, float(a)) for a in angles]
    reference = reference_energies(Path(data_file), force_field, molecule, atoms, conformations)
    result = {"angles": [float(a) for a in angles], "reference": (reference - reference.min()).tolist(),
              "reference_barrier": float(reference.max() - reference.min())}  # fmt: skip
    if checkpoint is not None:
        forces_of = ModelForces(checkpoint, alone, tabulate=False, electrostatics=False)
        model = np.array([forces_of(p, np.eye(3) * BOX)[1] for p in conformations])
        if forces_of.info.pme is not None:  # the Coulomb part the model was trained without
            model = model + np.array([lone_coulomb(alone, p, forces_of.info.pme) for p in conformations])
        result.update(model=(model - model.min()).tolist(), model_barrier=float(model.max() - model.min()))
    return result


def lone_coulomb(topology, positions: np.ndarray, settings) -> float:
    """The Coulomb energy (kcal/mol) of one molecule alone, its 1-2, 1-3 and 1-4 pairs weighted as the
    model's PME settings say: PME's in a box far larger than the molecule, but for a constant (torch-pme
    cannot tune a mesh for one small molecule in such a box, and needs none)."""
    from gnnmd.models.electrostatics import special_pairs
    from gnnmd.units import COULOMB_CONSTANT

    n = topology.n_atoms
    weights = np.ones((n, n))
    pairs, factors = special_pairs(topology, settings)
    weights[pairs[:, 0], pairs[:, 1]] = factors
    i, j = np.triu_indices(n, k=1)
    r = np.linalg.norm(positions[j] - positions[i], axis=1)
    q = np.asarray(topology.charges, dtype=np.float64)
    return float(COULOMB_CONSTANT * np.sum(weights[i, j] * q[i] * q[j] / r))
