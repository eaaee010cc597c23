"""The mean-field Lennard-Jones tail beyond the model's cutoff (gnnmd.inference.lj_tail) is LAMMPS' own
tail correction: for pairs beyond 4 A (to infinity) its energy and pressure equal the difference LAMMPS
reports with `pair_modify tail yes` and without, for argon and for water (O-O only: H has epsilon 0)."""

from __future__ import annotations

import numpy as np
import pytest

from gnnmd.data.reader import read_topology
from gnnmd.inference.lj_tail import LennardJonesTail, for_topology
from gnnmd.lammps.engine import load_system_commands, start_lammps


def _lammps_tail(data_file, forcefield: str, topology, cutoff: float) -> tuple[float, float, float]:
    """LAMMPS' (energy, pressure in atm, volume) of its tail correction beyond `cutoff` for lj/cut with
    Lorentz-Berthelot pair coefficients."""
    table = topology.type_table()
    coefficients = []
    for a, first in enumerate(table):
        for second in table[a:]:
            epsilon = float(np.sqrt(first["epsilon"] * second["epsilon"]))
            sigma = 0.5 * (first["sigma"] + second["sigma"])
            coefficients.append(f"pair_coeff {first['type_id']} {second['type_id']} {epsilon} {max(sigma, 0.1)}")
    values = []
    for tail in ("no", "yes"):
        lmp = start_lammps()
        lmp.commands_list(load_system_commands(data_file, forcefield))
        if topology.charges.any():
            lmp.commands_list(["kspace_style none"])
        lmp.commands_list([f"pair_style lj/cut {cutoff}", *coefficients, f"pair_modify tail {tail}"])
        lmp.commands_list(["thermo_style custom pe press vol", "run 0"])
        values.append([lmp.get_thermo(name) for name in ("pe", "press", "vol")])
        lmp.close()
    (pe0, p0, volume), (pe1, p1, _) = values
    return pe1 - pe0, p1 - p0, volume


@pytest.mark.parametrize("system", ["argon", "water"])
def test_tail_is_lammps_tail_correction(system, argon_run, water_run):
    run, forcefield = (argon_run, "argon.ff") if system == "argon" else (water_run, "spcfw.ff")
    data_file = run / "segment_000" / "system.data"
    topology = read_topology(data_file)
    energy, pressure, volume = _lammps_tail(data_file, forcefield, topology, 4.0)
    tail = for_topology(topology, 4.0, float("inf"))
    assert pressure < 0 and energy < 0  # attraction: the check is not empty
    assert tail.energy(volume) == pytest.approx(energy, rel=1e-6)
    assert tail.pressure_atm(volume) == pytest.approx(pressure, rel=1e-6)
    assert np.trace(tail.virial(volume)) / (3 * volume) * 68568.415 == pytest.approx(pressure, rel=1e-6)


def test_a_finite_outer_cutoff_leaves_out_what_lies_beyond_it():
    """Tail(4, 10) = Tail(4, inf) - Tail(10, inf): the reference's own truncation is respected."""
    epsilon, sigma = np.full(10, 0.2378), np.full(10, 3.405)
    parts = [LennardJonesTail(epsilon, sigma, a, b) for a, b in ((4, 10), (4, float("inf")), (10, float("inf")))]
    assert parts[0].energy_volume == pytest.approx(parts[1].energy_volume - parts[2].energy_volume)
    assert parts[0].virial_volume == pytest.approx(parts[1].virial_volume - parts[2].virial_volume)
    with pytest.raises(ValueError, match="model cutoff < outer cutoff"):
        LennardJonesTail(epsilon, sigma, 10.0, 4.0)
