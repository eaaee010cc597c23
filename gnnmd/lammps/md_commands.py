"""What LAMMPS is told for an MD run, and telling it: the system with no force field of its own for a
model run (or LAMMPS' Coulomb part, for a PME-trained model), the integration and outputs of an
MDSettings, the two stops (fix halt) of a failed run, and the run itself with LAMMPS' own errors kept.

The two stops: the model's callback flags a failure (its variable FAILED); and a catastrophic jump of
the temperature, above JUMP_FACTOR times the run's reference temperature (or not a number), which only
forces far outside anything physical can cause. The reference is the target (--temperature), or the
start's temperature but at least JUMP_FLOOR_K (a start at rest has no scale of its own). A factor of 5:
a thermostat holds the target within its fluctuations (tens of percent for a few dozen atoms), and
NVE from a physical start converts at most its potential energy's excess over equilibrium, about its
kinetic energy, so its temperature can roughly double, not grow fivefold. Slower heating is the
runaway check's (gnnmd.lammps.thermo), a warning over 100 fs of averages."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gnnmd.lammps.cg_prior import prior_system_commands
from gnnmd.lammps.engine import lammps_path
from gnnmd.lammps.md_settings import MDSettings
from gnnmd.models.electrostatics import PMESettings, has_charges

FAILED = "gnnmd_model_failed"  # the internal variable the model's callback sets at a failure: fix halt
_TOO_HOT = "gnnmd_too_hot"  # the variable fix halt checks each step for a catastrophic jump
JUMP_FACTOR = 5.0  # a temperature this many times the reference stops the run as a failure
JUMP_FLOOR_K = 300.0  # the least reference temperature (a start at rest or nearly)
COULOMB = ("lammps", "torch-pme")  # who computes the Coulomb part of a PME-trained model in MD


def coulomb_settings(stored: dict | None, topology, coulomb: str = "lammps") -> dict | None:
    """How an MD run computes the Coulomb part of a model that learned reference minus Coulomb (`stored`:
    its checkpoint's PME settings) for a system with charges: {"method": "lammps-pppm" or "torch-pme",
    and PMESettings' fields}. None for a model trained without PME or a system without charges: the model
    gives everything."""
    if coulomb not in COULOMB:
        raise ValueError(f"coulomb must be one of {', '.join(COULOMB)}, got {coulomb!r}")
    if not stored or not has_charges(topology):
        return None
    method = "lammps-pppm" if coulomb == "lammps" else "torch-pme"
    return {"method": method, **PMESettings.from_stored(stored).to_dict()}


def _lammps_coulomb_commands(settings: dict) -> list[str]:
    """LAMMPS' own Coulomb, as the model was trained to leave it out: real-space coul/long and PPPM, with
    the 1-2, 1-3 and 1-4 pairs (from the data file's bonds) weighted by the reference's special_bonds
    Coulomb factors."""
    pme = PMESettings.from_stored(settings)
    weights = " ".join(f"{float(f):.10g}" for f in pme.special)
    return [
        f"pair_style coul/long {float(pme.real_space_cutoff)}",
        "pair_coeff * *",
        f"kspace_style pppm {float(pme.accuracy)}",
        f"special_bonds lj/coul {weights} angle {'yes' if pme.angle else 'no'}",
        "neighbor 2.0 bin",
        "neigh_modify every 1 delay 0 check yes",
    ]


def model_system_commands(data_file: Path, topology, coulomb: dict | None = None, prior=None) -> list[str]:
    """Load the system with no force field of its own: the bonded styles are zero, the model gives all,
    but for LAMMPS' Coulomb (`coulomb` settings with method lammps-pppm) under a PME-trained model; or,
    for a model that corrects a CG prior (`prior`, its ForceField with the tables where the run writes
    them), under the prior, to which fix external adds the model."""
    if prior is not None:
        if coulomb is not None:
            raise ValueError("a model over a CG prior runs without PME Coulomb")
        return prior_system_commands(data_file, prior, topology)
    read = f"read_data {lammps_path(data_file)} nocoeff"
    commands = ["units real", "atom_style full", "boundary p p p", read]
    if coulomb is not None and coulomb["method"] == "lammps-pppm":
        commands += _lammps_coulomb_commands(coulomb)
    else:
        commands.append("pair_style none")
    if len(topology.bonds):
        commands += ["bond_style zero", "bond_coeff *"]
    if len(topology.angles):
        commands += ["angle_style zero", "angle_coeff *"]
    return commands


def dynamics_commands(run: MDSettings, out: Path, model_fix: bool) -> list[str]:
    """Velocities, (the model's fix external, and fix halt to stop at the step its callback fails,) the
    integrator, and the dump, log and thermo.txt outputs.
    thermo.txt's columns: step, temperature, potential energy, time (fs), kinetic and total energy, volume."""
    commands = []
    if run.temperature is not None:
        commands.append(f"velocity all create {run.temperature} {run.seed} mom yes rot yes dist gaussian")
    if model_fix:
        commands += ["fix model all external pf/callback 1 1", "fix_modify model energy yes virial yes"]
        commands += [f"variable {FAILED} internal 0", f"fix halt all halt 1 v_{FAILED} != 0 error soft"]
    every = run.thermo_every
    return commands + [
        _integrator(run),
        f"timestep {run.timestep}",
        "thermo_style custom step temp pe ke etotal press",
        f"thermo {max(1, run.steps // 20)}",
        f"dump trajectory all custom {run.dump_every} {lammps_path(out / 'trajectory.lammpstrj')} "
        "id mol type q x y z fx fy fz",
        "dump_modify trajectory sort id format float %.10g",
        "variable time equal step*dt",
        "variable ke equal ke",
        "variable etotal equal etotal",
        "variable volume equal vol",
        f"fix thermo all ave/time {every} 1 {every} c_thermo_temp c_thermo_pe v_time v_ke v_etotal v_volume "
        f'file {lammps_path(out / "thermo.txt")} format " %.10g"',
    ]


def _integrator(run: MDSettings) -> str:
    """LAMMPS' integrator for the ensemble (Nose-Hoover for nvt and for npt, isotropic, with its barostat)."""
    temp = f"temp {run.temperature} {run.temperature} {run.tdamp}"
    if run.ensemble == "nvt":
        return f"fix integrate all nvt {temp}"
    if run.ensemble == "npt":
        return f"fix integrate all npt {temp} iso {run.pressure} {run.pressure} {run.pdamp}"
    return "fix integrate all nve"


def _lammps_message(err: BaseException) -> str:
    """The first line of a LAMMPS error (MPIAbortException's str() is its repr)."""
    lines = str(getattr(err, "message", None) or err).strip().splitlines()
    return "LAMMPS: " + (lines[0] if lines else type(err).__name__)


def set_up(lmp, commands: list[str], data_file: Path, out: Path, run: MDSettings) -> None:
    """Give LAMMPS the commands, then the jump stop (its reference needs the velocities LAMMPS holds)."""
    try:
        lmp.commands_list(commands)
        lmp.commands_list(_jump_commands(lmp, run))
    except Exception as err:
        lmp.close()
        raise RuntimeError(
            f"{data_file}: LAMMPS could not set up the run ({_lammps_message(err)}; see {out / 'log.lammps'})"
        ) from err


def _jump_commands(lmp, run: MDSettings) -> list[str]:
    """fix halt at a temperature above JUMP_FACTOR times the reference, or not a number (see the module)."""
    reference = run.temperature if run.temperature is not None else max(_start_temperature(lmp), JUMP_FLOOR_K)
    limit = JUMP_FACTOR * reference
    return [
        f"variable {_TOO_HOT} equal !(temp<={limit:.6g})",
        f"variable gnnmd_jump_reference equal {reference:.6g}",
        f"fix jump all halt 1 v_{_TOO_HOT} != 0 error soft",
    ]


def _start_temperature(lmp) -> float:
    """The temperature of the velocities LAMMPS holds before the run, counted as its compute temp does
    (3N - 3 degrees of freedom, in its units' constants); on every rank (gather_atoms is collective)."""
    n_atoms = int(lmp.get_natoms())
    velocities = np.ctypeslib.as_array(lmp.gather_atoms("v", 1, 3)).reshape(-1, 3)
    types = np.ctypeslib.as_array(lmp.gather_atoms("type", 0, 1))
    masses = np.asarray(lmp.numpy.extract_atom("mass"))[types]
    twice_kinetic = float((masses * (velocities**2).sum(axis=1)).sum()) * lmp.extract_global("mvv2e")
    return twice_kinetic / (max(3 * n_atoms - 3, 1) * lmp.extract_global("boltz"))


def timed_run(lmp, steps: int, bar: tqdm | None = None) -> tuple[float, tuple[int, str] | None]:
    """`run steps`; the seconds it took, and the step and message of LAMMPS' own error if it stopped
    with one (e.g. "Bond atoms 28 30 missing": a molecule torn apart) or of a temperature jump (fix
    jump). LAMMPS is closed afterwards."""
    started = time.perf_counter()
    failure = None
    try:
        lmp.command(f"run {steps}")
        failure = _jump(lmp)
    except Exception as err:
        failure = int(lmp.extract_global("ntimestep")), _lammps_message(err)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    lmp.close()
    return seconds, failure


def _jump(lmp) -> tuple[int, str] | None:
    """The step and reason of a stop at a temperature jump, or None: the run went on to its end."""
    if not lmp.extract_variable(_TOO_HOT):
        return None
    step, reference = int(lmp.extract_global("ntimestep")), lmp.extract_variable("gnnmd_jump_reference")
    return step, (
        f"the temperature jumped to {lmp.get_thermo('temp'):.6g} K at step {step}, over {JUMP_FACTOR:g} times "
        f"the run's reference {reference:.6g} K: forces far outside anything physical (e.g. overlapping atoms)"
    )
