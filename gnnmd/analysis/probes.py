"""Learned single interactions (the study's Figs. 3 and 4): two atoms alone in a large box, built as
graphs with the same features as in training, the model's force along the pair axis against the
analytic force of the force field at each distance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gnnmd.analysis.plotting import pyplot
from gnnmd.data.graphs import BOND, NONBONDED
from gnnmd.data.topology import Topology
from gnnmd.inference.forces import ModelForces
from gnnmd.units import COULOMB_CONSTANT as COULOMB


@dataclass(frozen=True)
class Probe:
    """A pair interaction to look at: two type-table rows, the bond class, and its analytic force
    F(r) (positive = repulsive) in kcal/mol/A."""

    name: str
    a: dict
    b: dict
    bond_class: int
    distances: tuple[float, float]
    bond_k: float = 0.0
    bond_r0: float = 0.0

    def analytic(self, r: np.ndarray) -> np.ndarray:
        if self.bond_class == BOND:  # harmonic bond; LAMMPS excludes bonded pairs' LJ and Coulomb
            return -2.0 * self.bond_k * (r - self.bond_r0)
        eps = np.sqrt(self.a["epsilon"] * self.b["epsilon"])  # geometric mixing (lj/cut default)
        sigma = np.sqrt(self.a["sigma"] * self.b["sigma"])
        lj = 24.0 * eps / r * (2.0 * (sigma / r) ** 12 - (sigma / r) ** 6) if eps > 0 else 0.0 * r
        return lj + COULOMB * self.a["charge"] * self.b["charge"] / r**2


def _pair_topology(a: dict, b: dict, bonded: bool) -> Topology:
    rows = [a, b] if a is not b else [a]
    types = np.array([0, 1 if len(rows) == 2 else 0])

    def table(key):
        return np.array([row[key] for row in rows])

    return Topology(
        types=types,
        charges=np.array([a["charge"], b["charge"]], dtype=np.float64),
        epsilon=np.array([a["epsilon"], b["epsilon"]], dtype=np.float64),
        sigma=np.array([a["sigma"], b["sigma"]], dtype=np.float64),
        molecules=np.array([1, 1 if bonded else 2]),
        bonds=np.array([[0, 1]]) if bonded else np.zeros((0, 2), dtype=np.int64),
        angles=np.zeros((0, 3), dtype=np.int64),
        table_type_ids=table("type_id"),
        table_names=table("name"),
        table_masses=table("mass"),
        table_charges=table("charge"),
        table_epsilon=table("epsilon"),
        table_sigma=table("sigma"),
    )


def probe_curve(checkpoint, probe: Probe, points: int = 80, box: float = 60.0) -> dict:
    """The model's force on the second atom along the pair axis (positive = repulsive) over the probe's
    distance range, and the analytic force there.

    For a model trained with PME the Coulomb part of an isolated pair is added exactly (q_a q_b / r^2,
    none for a bonded pair, as LAMMPS' special_bonds), rather than by PME in a large empty box."""
    topology = _pair_topology(probe.a, probe.b, probe.bond_class == BOND)
    forces_of = ModelForces(
        checkpoint, topology, system=f"probe {probe.name}", allow_unknown_types=True, electrostatics=False
    )
    r = np.linspace(*probe.distances, points)
    learned = np.empty(points)
    cell = np.eye(3) * box
    for k, distance in enumerate(r):
        positions = np.array([[box / 2, box / 2, box / 2], [box / 2 + distance, box / 2, box / 2]])
        forces, _ = forces_of(positions, cell)
        learned[k] = forces[1, 0]
    if forces_of.info.electrostatics and probe.bond_class != BOND:
        learned += COULOMB * probe.a["charge"] * probe.b["charge"] / r**2
    return {"name": probe.name, "r": r, "learned": learned, "analytic": probe.analytic(r)}


def water_probes(type_table: list[dict], bond_k: float = 529.581, bond_r0: float = 1.012) -> list[Probe]:
    """The study's Fig. 3: O-O between molecules (LJ + Coulomb), H-H between molecules (Coulomb), and the
    O-H bond (harmonic; SPC/Fw constants by default)."""
    by_name = {row["name"]: row for row in type_table}
    if not {"O", "H"} <= set(by_name):
        raise ValueError(f"water probes need O and H in the type table, got {sorted(by_name)}")
    o, h = by_name["O"], by_name["H"]
    return [
        Probe("O-O (LJ + Coulomb)", o, o, NONBONDED, (2.6, 6.0)),
        Probe("H-H (Coulomb)", h, h, NONBONDED, (1.6, 6.0)),
        Probe("O-H bond (harmonic)", o, h, BOND, (0.85, 1.2), bond_k=bond_k, bond_r0=bond_r0),
    ]


def argon_probe(argon: dict) -> Probe:
    """The study's Fig. 4: Ar-Ar Lennard-Jones."""
    return Probe("Ar-Ar (LJ)", argon, argon, NONBONDED, (3.2, 8.0))


def plot_probes(curves: list[dict], path, title: str = "") -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, curve in zip(axes[0], curves):
        ax.plot(curve["r"], curve["analytic"], "k-", label="force field")
        for label, learned in curve.get("models", {"model": curve["learned"]}).items():
            ax.plot(curve["r"], learned, "--", label=label)
        span = np.abs(curve["analytic"]).max()
        ax.set_ylim(-1.2 * span, 1.2 * span)
        ax.axhline(0.0, color="0.7", lw=0.6)
        ax.set_title(curve["name"])
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("force along r (kcal/mol/Å)")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
