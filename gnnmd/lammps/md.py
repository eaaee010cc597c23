"""A trained model as LAMMPS' force provider: LAMMPS integrates (nve/nvt, its own thermostat), and at
every step `fix external pf/callback` asks gnnmd for the forces (and energy) of the current positions
and cell. The graph is rebuilt each step from what LAMMPS holds.

`run_lammps_md` runs the same MD with the system's own force field instead (plain LAMMPS, the
reference), and `thermo_statistics` turns either run's thermo table into the summary's numbers.

A model trained with PME learned reference minus Coulomb (with LAMMPS' special_bonds exclusions). In MD
LAMMPS computes that Coulomb part itself by default (`coulomb="lammps"`: pair coul/long + kspace pppm
with the checkpoint's real-space cutoff, accuracy and special factors), and the callback gives only the
learned part; `coulomb="torch-pme"` adds torch-pme's Coulomb to the model's forces in the callback
instead (as training and evaluation do). Both compute the same Ewald sum, each to its accuracy.

A run that fails (the model's forces, or LAMMPS' own error such as a molecule torn apart) is a result:
LAMMPS stops at the failure, the dump and thermo.txt end before it, and the summary says when and why."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gnnmd.data.reader import DataError, read_topology
from gnnmd.devices import resolve_device
from gnnmd.files import FolderLock, atomic_write_text
from gnnmd.inference.committee import CommitteeForces
from gnnmd.inference.domain import DomainForces
from gnnmd.inference.forces import ModelForces
from gnnmd.inference.lj_tail import LennardJonesTail, for_model
from gnnmd.lammps.engine import (
    check_lammps_path,
    lammps_path,
    lammps_world_size,
    load_system_commands,
    start_lammps,
)
from gnnmd.lammps.ranks import RankSum, check_box_for_clusters, ghost_commands, world
from gnnmd.lammps.thermo import end_outputs_before, thermo_statistics
from gnnmd.models.electrostatics import PMESettings, has_charges
from gnnmd.progress import hidden
from gnnmd.units import VOIGT_COLUMNS, VOIGT_ROWS

_FAILED = "gnnmd_model_failed"  # the internal variable the model's callback sets at a failure: fix halt
COULOMB = ("lammps", "torch-pme")  # who computes the Coulomb part of a PME-trained model in MD
ENSEMBLES = ("nve", "nvt", "npt")


@dataclass(frozen=True)
class _Dynamics:
    """What run_md and run_lammps_md share: the integration and the output, both set by LAMMPS commands."""

    steps: int
    timestep: float
    ensemble: str
    temperature: float | None
    seed: int
    dump_every: int
    thermo_every: int
    tdamp: float
    pressure: float = 1.0  # atm, NPT (isotropic)
    pdamp: float = 1000.0  # fs

    def check(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.ensemble in ("nvt", "npt") and self.temperature is None:
            raise ValueError(f"--ensemble {self.ensemble} needs --temperature")
        if self.steps < 1 or self.timestep <= 0 or self.dump_every < 1:
            raise ValueError("steps, timestep and dump-every must be positive")


def _check_out(out: Path, overwrite: bool, data_file: Path) -> None:
    """Refuse, before LAMMPS starts, paths LAMMPS cannot take and an `out` with files (unless `overwrite`)."""
    check_lammps_path(data_file)
    check_lammps_path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace its files")


def coulomb_settings(info: dict, topology, coulomb: str = "lammps") -> dict | None:
    """How an MD run computes the Coulomb part of a model that learned reference minus Coulomb (its
    checkpoint `info` has PME settings) for a system with charges: {"method": "lammps-pppm" or
    "torch-pme", and PMESettings' fields}. None for a model
    trained without PME or a system without charges: the model gives everything."""
    if coulomb not in COULOMB:
        raise ValueError(f"coulomb must be one of {', '.join(COULOMB)}, got {coulomb!r}")
    stored = info.get("electrostatics")
    if not stored or not has_charges(topology):
        return None
    settings = PMESettings.from_stored(stored)
    method = "lammps-pppm" if coulomb == "lammps" else "torch-pme"
    return {"method": method, **settings.to_dict()}


def _lammps_coulomb_commands(settings: dict) -> list[str]:
    """LAMMPS' own Coulomb, as the model was trained to leave it out: real-space coul/long and PPPM, with
    the 1-2, 1-3 and 1-4 pairs (from the data file's bonds and angles) weighted by the special factors."""
    special = PMESettings.from_stored(settings)
    weights = " ".join(f"{float(f):.10g}" for f in special.special)
    return [
        f"pair_style coul/long {float(special.real_space_cutoff)}",
        "pair_coeff * *",
        f"kspace_style pppm {float(special.accuracy)}",
        f"special_bonds lj/coul {weights} angle {'yes' if special.angle else 'no'}",
        "neighbor 2.0 bin",
        "neigh_modify every 1 delay 0 check yes",
    ]


def _model_system_commands(data_file: Path, topology, coulomb: dict | None = None) -> list[str]:
    """Load the system with no force field of its own: the bonded styles are zero, the model gives all,
    but for LAMMPS' Coulomb (`coulomb` settings with method lammps-pppm) under a PME-trained model."""
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


def _dynamics_commands(run: _Dynamics, out: Path, model_fix: bool) -> list[str]:
    """Velocities, (the model's fix external, and fix halt to stop at the step its callback fails,) the
    integrator, and the dump, log and thermo.txt outputs.
    thermo.txt's columns: step, temperature, potential energy, time (fs), kinetic and total energy, volume."""
    commands = []
    if run.temperature is not None:
        commands.append(f"velocity all create {run.temperature} {run.seed} mom yes rot yes dist gaussian")
    if model_fix:
        commands += ["fix model all external pf/callback 1 1", "fix_modify model energy yes virial yes"]
        commands += [f"variable {_FAILED} internal 0", f"fix halt all halt 1 v_{_FAILED} != 0 error soft"]
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


def _integrator(run: _Dynamics) -> str:
    """LAMMPS' integrator for the ensemble (Nose-Hoover for nvt and for npt, isotropic, with its barostat)."""
    temp = f"temp {run.temperature} {run.temperature} {run.tdamp}"
    if run.ensemble == "nvt":
        return f"fix integrate all nvt {temp}"
    if run.ensemble == "npt":
        return f"fix integrate all npt {temp} iso {run.pressure} {run.pressure} {run.pdamp}"
    return "fix integrate all nve"


def _box_matrix(lmp) -> np.ndarray:
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lx, ly, lz = np.subtract(boxhi, boxlo)
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


class _ModelCallback:
    """`fix external`'s callback: the model's forces (and energy) for the atoms LAMMPS holds.

    LAMMPS cannot take a Python exception: the first failure is kept (`failed_at`, `error`) and flagged
    to fix halt, which stops LAMMPS at the end of that step (of step 1 for a failure in the setup);
    until then the forces are zero and the model is skipped."""

    def __init__(self, lmp, forces_of: ModelForces | CommitteeForces, n_atoms: int, bar: tqdm):
        self.lmp, self.forces_of, self.n_atoms, self.bar = lmp, forces_of, n_atoms, bar
        self.tail: LennardJonesTail | None = None  # the Lennard-Jones beyond the model's cutoff (mean field)
        self.failed_at: int | None = None
        self.error: BaseException | None = None
        self.has_energy = False
        self.deviations: list[tuple[int, float, float]] = []  # a committee's (step, max, mean) force deviation

    def __call__(self, _caller, step, nlocal, tags, x, f):
        if self.error is not None:  # LAMMPS runs on to the end of `run`: the run is already lost
            f[:nlocal] = 0.0
            return
        try:
            order = np.asarray(tags, dtype=np.int64) - 1
            positions = np.empty((self.n_atoms, 3))
            positions[order] = x[:nlocal]
            cell = _box_matrix(self.lmp)
            forces, energy = self.forces_of(positions, cell)
            if not np.all(np.isfinite(forces)) or (energy is not None and not np.isfinite(energy)):
                raise FloatingPointError("the model's forces or energy are not finite")
            f[:nlocal] = forces[order]
            deviation = getattr(self.forces_of, "last_deviation", None)
            if deviation is not None:
                self.deviations.append((int(step), float(deviation.max()), float(deviation.mean())))
            virial = self.forces_of.last_virial if getattr(self.forces_of, "virial", False) else None
            self._hand_over(energy, virial, cell)
            self.bar.n = min(int(step), self.bar.total)
            self.bar.refresh()
        except Exception as err:
            self.failed_at, self.error = int(step), err
            f[:nlocal] = 0.0
            self.lmp.set_internal_variable(_FAILED, 1.0)

    def _hand_over(self, energy: float | None, virial: np.ndarray | None, cell: np.ndarray) -> None:
        """The model's energy (kcal/mol) and virial (3x3; None: none) of the whole system, plus the
        Lennard-Jones tail's if set, to LAMMPS: its potential energy and pressure (and NPT) take them."""
        volume = abs(float(np.linalg.det(cell)))
        if virial is not None:
            v = virial + (self.tail.virial(volume) if self.tail is not None else 0.0)
            self.lmp.fix_external_set_virial_global("model", v[VOIGT_ROWS, VOIGT_COLUMNS].tolist())
        if energy is not None:
            self.has_energy = True
            self.lmp.fix_external_set_energy_global("model", energy + (self.tail.energy(volume) if self.tail else 0.0))

    @property
    def failure(self) -> str | None:
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def first_failure(self, lammps_failure: tuple[int, str] | None) -> tuple[int | None, str | None]:
        """The step and reason of the run's failure: the model's, which comes first if there is one
        (LAMMPS' own error could only come after it), or LAMMPS' (from _timed_run); Nones for none."""
        if self.error is not None:
            return self.failed_at, self.failure
        return lammps_failure or (None, None)


class _DomainCallback(_ModelCallback):
    """The callback on each of several MPI ranks (gnnmd.lammps.ranks): the model's share of this rank's
    atoms (DomainForces) from LAMMPS' local and ghost atoms, then one sum over the ranks of the forces by
    atom id, the energy, the virial and the failure flags, which every rank joins at every step (a rank
    that failed too), so all of them stop together at the first failure."""

    def __init__(self, lmp, forces_of: DomainForces, n_atoms: int, bar: tqdm, comm):
        super().__init__(lmp, forces_of, n_atoms, bar)
        self.sum = RankSum(comm, n_atoms)
        self.wall_steps = 0  # steps in which a wall acted on any rank
        # the directions LAMMPS does not divide (one rank across): each rank holds the whole box there
        self.whole_box = tuple(int(n) == 1 for n in lmp.extract_global("procgrid"))

    def __call__(self, _caller, step, nlocal, tags, x, f):
        forces, ids, numbers = None, None, np.zeros(12)  # energy, virial (9), wall acted, failed
        cell = _box_matrix(self.lmp)
        if self.error is None:
            try:
                every = nlocal + int(self.lmp.extract_setting("nghost"))
                ids = np.asarray(self.lmp.numpy.extract_atom("id", nelem=every), dtype=np.int64) - 1
                periodic = self.whole_box if not (cell - np.diag(np.diag(cell))).any() else (False, False, False)
                positions = self.lmp.numpy.extract_atom("x", nelem=every)
                forces, energy = self.forces_of(positions, ids, nlocal, cell, periodic)
                numbers[:11] = [energy, *self.forces_of.last_virial.ravel(), self.forces_of.wall_active]
            except Exception as err:
                forces, self.failed_at, self.error = None, int(step), err
        numbers[11] = self.error is not None
        total, numbers = self.sum(ids, forces, numbers)
        if numbers[11] == 0 and not (np.all(np.isfinite(total)) and np.all(np.isfinite(numbers))):
            self.failed_at, self.error, numbers[11] = int(step), FloatingPointError("the model's forces or energy are not finite"), 1  # fmt: skip
        if numbers[11] > 0:
            if self.error is None:
                self.failed_at, self.error = int(step), RuntimeError("the model failed on another MPI rank")
            f[:nlocal] = 0.0
            self.lmp.set_internal_variable(_FAILED, 1.0)
            return
        f[:nlocal] = total[np.asarray(tags[:nlocal], dtype=np.int64) - 1]
        self._hand_over(float(numbers[0]), numbers[1:10].reshape(3, 3), cell)
        self.wall_steps += int(numbers[10] > 0)
        self.bar.n = min(int(step), self.bar.total)
        self.bar.refresh()


def _lammps_message(err: Exception) -> str:
    """The first line of a LAMMPS error (MPIAbortException's str() is its repr)."""
    lines = str(getattr(err, "message", None) or err).strip().splitlines()
    return "LAMMPS: " + (lines[0] if lines else type(err).__name__)


def _set_up(lmp, commands: list[str], data_file: Path, out: Path) -> None:
    try:
        lmp.commands_list(commands)
    except Exception as err:
        lmp.close()
        raise RuntimeError(
            f"{data_file}: LAMMPS could not set up the run ({_lammps_message(err)}; see {out / 'log.lammps'})"
        ) from err


def _timed_run(lmp, steps: int, bar: tqdm | None = None) -> tuple[float, tuple[int, str] | None]:
    """`run steps`; the seconds it took, and the step and message of LAMMPS' own error if it stopped
    with one (e.g. "Bond atoms 28 30 missing": a molecule torn apart). LAMMPS is closed afterwards."""
    started = time.perf_counter()
    failure = None
    try:
        lmp.command(f"run {steps}")
    except Exception as err:
        failure = int(lmp.extract_global("ntimestep")), _lammps_message(err)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    lmp.close()
    return seconds, failure


def _model_run_inputs(checkpoint, data_file: Path, allow_unknown_types: bool, coulomb: str, run, out: Path,
                      device: str = "cpu", precision: str = "float32"):  # fmt: skip
    """What a model run needs before LAMMPS starts, where all that can be wrong with the inputs is found:
    the topology, the model's force function for the callback (with LAMMPS' Coulomb the learned part
    alone, with torch-pme's the sum), the Coulomb settings (coulomb_settings) and the LAMMPS commands."""
    if coulomb not in COULOMB:
        raise ValueError(f"coulomb must be one of {', '.join(COULOMB)}, got {coulomb!r}")
    topology = read_topology(data_file)
    with_torch_pme = coulomb == "torch-pme"
    checkpoints = list(checkpoint) if isinstance(checkpoint, (list, tuple)) else [checkpoint]
    options = dict(electrostatics=with_torch_pme, device=device, precision=precision)
    ranks = lammps_world_size()
    if ranks > 1:
        _check_domain_run(checkpoints, with_torch_pme, device, ranks)
        forces_of = DomainForces(checkpoints[0], topology, str(data_file), allow_unknown_types, precision=precision)
    elif len(checkpoints) > 1:
        forces_of = CommitteeForces(checkpoints, topology, str(data_file), allow_unknown_types, **options)
    else:
        forces_of = ModelForces(checkpoints[0], topology, str(data_file), allow_unknown_types, **options)
    electrostatics = coulomb_settings(forces_of.info, topology, coulomb)
    _use_virial(forces_of, run.ensemble, with_torch_pme and electrostatics is not None)
    commands = _model_system_commands(data_file, topology, electrostatics)
    if ranks > 1:
        commands += ghost_commands(forces_of.ghost_reach)
    return topology, forces_of, electrostatics, commands + _dynamics_commands(run, out, model_fix=True)


def _check_domain_run(checkpoints: list, with_torch_pme: bool, device: str, ranks: int) -> None:
    """What runs on one rank only, refused before LAMMPS starts on several."""
    why = None
    if len(checkpoints) > 1:
        why = "a committee runs on one rank"
    elif with_torch_pme:
        why = "torch-pme's Coulomb runs on one rank; LAMMPS' (--coulomb lammps, the default) runs on all"
    elif resolve_device(device).type != "cpu":
        why = f"the model runs on the CPU cores of the ranks, not on --device {device}"
    if why:
        raise ValueError(f"MD on {ranks} MPI ranks (mpiexec -n {ranks}): {why}")


def _use_virial(forces_of, ensemble: str, torch_pme_coulomb: bool) -> None:
    """Hand LAMMPS the model's virial whenever the force function has one (the tabulated energy model), so
    the pressure is right; NPT needs it. torch-pme's Coulomb has none in MD: NPT takes LAMMPS' (the default)."""
    has_virial = getattr(forces_of, "supports_virial", False) and not torch_pme_coulomb
    if ensemble == "npt" and not has_virial:
        why = "with --coulomb torch-pme" if torch_pme_coulomb else f"for a {forces_of.info['family']} model"
        raise ValueError(f"NPT needs the model's virial, which gnnmd md has no way to compute {why}; "
                         "an energy model (nequip) with LAMMPS' Coulomb (--coulomb lammps) has it")  # fmt: skip
    forces_of.virial = has_virial


def _speed(steps: int, n_atoms: int, seconds: float) -> dict:
    return {
        "seconds": round(seconds, 3),
        "steps_per_second": steps / seconds,
        "atom_steps_per_second": steps * n_atoms / seconds,
    }


def run_md(
    checkpoint,
    data_file,
    steps: int,
    out,
    timestep: float = 1.0,
    ensemble: str = "nve",
    temperature: float | None = None,
    seed: int = 1,
    dump_every: int = 10,
    thermo_every: int = 1,
    tdamp: float = 100.0,
    pressure: float = 1.0,
    pdamp: float = 1000.0,
    allow_unknown_types: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    coulomb: str = "lammps",
    device: str = "cpu",
    precision: str = "float32",
    lj_tail: float | None = None,
) -> dict:
    """Run `steps` of MD of the system in `data_file` with the model's forces (computed on `device`, in
    `precision`: gnnmd.inference.forces.model_dtype), plus the mean-field Lennard-Jones between the model's
    cutoff and `lj_tail` (A, the reference's LJ cutoff; gnnmd.inference.lj_tail) if given; write
    the dump, log, thermo table and summary.json into `out`. With no `temperature` the data file's velocities are
    kept (an equilibrated start); NVT needs a temperature. A PME-trained model's Coulomb part is
    LAMMPS' (`coulomb="lammps"`, pppm) or torch-pme's ("torch-pme"); the summary's `electrostatics`
    says which ("lammps-pppm", "torch-pme", or None: the model gives all).

    A run that fails part-way (the model's non-finite forces, or LAMMPS' own error, e.g. a molecule torn
    apart) is a result, not a crash: LAMMPS stops there, the dump and thermo.txt end before the failure,
    and the summary says `blown_up`, the step and the reason; its statistics cover the steps before."""
    data_file, out = Path(data_file), Path(out)
    run = _Dynamics(steps, timestep, ensemble, temperature, seed, dump_every, thermo_every, tdamp, pressure, pdamp)
    run.check()
    _check_out(out, overwrite, data_file)
    inputs = _model_run_inputs(checkpoint, data_file, allow_unknown_types, coulomb, run, out, device, precision)
    topology, forces_of, electrostatics, commands = inputs
    tail = _check_lj_tail(lj_tail, forces_of, topology)
    comm = world() if isinstance(forces_of, DomainForces) else None
    root = comm is None or comm.rank == 0  # writes the outputs LAMMPS does not (LAMMPS writes on rank 0)
    if comm is not None:
        comm.Barrier()  # every rank has checked `out` before rank 0 writes into it
    with FolderLock(out) if root else contextlib.nullcontext():  # one writer per output folder
        out.mkdir(parents=True, exist_ok=True)
        lmp = start_lammps(log=out / "log.lammps")
        _set_up(lmp, commands, data_file, out)
        callback = _callback(lmp, forces_of, topology.n_atoms, steps, progress and root, comm, data_file)
        callback.tail = tail
        seconds, lammps_failure = _timed_run(lmp, steps, callback.bar)
        failure = callback.first_failure(lammps_failure)
        summary = None
        if root:
            summary = _finish(checkpoint, data_file, topology, forces_of, electrostatics, run, out, callback, seconds,
                              failure, 1 if comm is None else comm.size)  # fmt: skip
    return summary if comm is None else comm.bcast(summary, root=0)


def _check_lj_tail(lj_tail: float | None, forces_of, topology) -> LennardJonesTail | None:
    """The Lennard-Jones tail of --lj-tail (None without it), checked before LAMMPS starts."""
    if lj_tail is None:
        return None
    if not forces_of.virial:
        raise ValueError("--lj-tail adds to the model's energy and virial, which this model has none of in MD")
    return for_model(forces_of.info, topology, lj_tail)


def _tail_record(tail: LennardJonesTail | None, volume: float | None) -> dict | None:
    if tail is None:
        return None
    pressure = None if volume is None else tail.pressure_atm(volume)
    return {"from": tail.inner, "to": tail.outer, "pressure_atm_at_mean_volume": pressure}


def _callback(lmp, forces_of, n_atoms: int, steps: int, progress: bool, comm, data_file: Path):
    """The model's callback, set on the fix: on one rank, or on each of several (`comm`), where the box
    must be wide enough for a rank's cluster of atoms (check_box_for_clusters)."""
    bar = tqdm(total=steps, desc="MD", unit="step", disable=hidden(progress))
    if comm is None:
        callback = _ModelCallback(lmp, forces_of, n_atoms, bar)
    else:
        try:
            check_box_for_clusters(_box_matrix(lmp), forces_of.cutoff + forces_of.skin, str(data_file))
        except ValueError:
            lmp.close()
            raise
        callback = _DomainCallback(lmp, forces_of, n_atoms, bar, comm)
    lmp.set_fix_external_callback("model", callback, None)
    return callback


def _finish(checkpoint, data_file, topology, forces_of, electrostatics, run, out, callback, seconds, failure,
            ranks: int) -> dict:  # fmt: skip
    """On the first rank, after the run: cut the outputs at a failure, write summary.json (_model_summary,
    with density, ranks and the LJ tail) and the warnings at the end of the log."""
    end_outputs_before(out, failure[0])
    if ranks > 1 and forces_of.walls is not None:
        forces_of.wall_contacts = callback.wall_steps
    summary = _model_summary(checkpoint, data_file, forces_of, electrostatics, run, out, callback, seconds, failure)
    summary["mean_density_g_cm3"] = _density(topology, summary["mean_volume"])
    summary["mpi_ranks"] = ranks
    summary["lj_tail"] = _tail_record(callback.tail, summary["mean_volume"])
    if ranks > 1:  # the first rank's share at its last rebuild
        summary["rank_0_atoms"] = forces_of.sizes
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    _log_warnings(out / "log.lammps", summary["warnings"])
    return summary


def _model_summary(checkpoint, data_file, forces_of, electrostatics, run, out, callback, seconds, failure) -> dict:
    """run_md's summary.json (see run_md), with its committee's deviation written to deviation.txt."""
    failed_at, failure = failure
    n_atoms = callback.n_atoms
    statistics = thermo_statistics(out / "thermo.txt", n_atoms, failed_at, callback.has_energy, run.ensemble,
                                   run.temperature)  # fmt: skip
    summary = {
        "checkpoint": [str(c) for c in checkpoint] if isinstance(checkpoint, (list, tuple)) else str(checkpoint),
        "system": str(data_file),
        "model_family": forces_of.info["family"],
        "device": str(getattr(forces_of, "device", "cpu")),
        "electrostatics": electrostatics and electrostatics["method"],
        "electrostatics_settings": electrostatics,
        **_run_record(n_atoms, run, failed_at, seconds),
        "model_energy": callback.has_energy,
        # steps in which the model's walls acted (a pair outside the training frames' distances); None: no walls
        "wall_contacts": getattr(forces_of, "wall_contacts", None),
        **statistics,
        "failed_at_step": failed_at,
        "failure": failure,
        "committee": _committee_record(callback.deviations, failed_at, out) if callback.deviations else None,
        "warnings": [statistics["runaway"]["message"]] if statistics["runaway"] else [],
    }
    return summary


def _density(topology, volume: float | None) -> float | None:
    """g/cm^3 of the system's atoms in `volume` A^3."""
    if volume is None:
        return None
    return float(np.asarray(topology.table_masses)[topology.types].sum() / volume * 1.66053907)


def _file_density(data_file: Path, volume: float | None) -> float | None:
    """_density of a data file's system; None for one gnnmd cannot read without its Pair Coeffs (a CG
    system for pair_style table, whose coefficients come from the force field)."""
    try:
        return _density(read_topology(data_file), volume)
    except DataError:
        return None


def _committee_record(deviations: list, failed_at: int | None, out: Path) -> dict:
    """A committee run's force deviation: per step into deviation.txt (step, max and mean over atoms,
    kcal/mol/A), and its summary."""
    table = np.array([row for row in deviations if failed_at is None or row[0] < failed_at]).reshape(-1, 3)
    lines = ["# step max_force_deviation mean_force_deviation (kcal/mol/A)"]
    lines += [f"{int(step)} {high:.6g} {mean:.6g}" for step, high, mean in table]
    atomic_write_text(out / "deviation.txt", "\n".join(lines) + "\n")
    return {
        "deviation_file": "deviation.txt",
        "max_force_deviation": float(table[:, 1].max()) if len(table) else None,
        "mean_max_force_deviation": float(table[:, 1].mean()) if len(table) else None,
    }


def _log_warnings(log: Path, messages: list[str]) -> None:
    """The run's warnings at the end of its log.lammps (LAMMPS has closed it)."""
    if messages and log.is_file():
        with open(log, "a") as file:
            file.writelines(f"WARNING (gnnmd): {message}\n" for message in messages)


def _run_record(n_atoms: int, run: _Dynamics, failed_at: int | None, seconds: float) -> dict:
    """The summary's description of a run (run_md's and run_lammps_md's): size, ensemble and speed, over
    the steps before a failure (those after it cost nothing)."""
    return {
        "atoms": n_atoms,
        "ensemble": run.ensemble,
        "temperature": run.temperature,
        "timestep_fs": run.timestep,
        "steps": run.steps,
        **_speed(run.steps if failed_at is None else max(failed_at, 1), n_atoms, seconds),
    }


def dataset_forcefield(data_dir):
    """The reference force field (a ForceField) a dataset's frames were made with, from its manifest.json."""
    from gnnmd.lammps.label import reference_force_field

    return reference_force_field(data_dir)


def run_lammps_md(
    data_file,
    forcefield,
    steps: int,
    out,
    timestep: float = 1.0,
    ensemble: str = "nve",
    temperature: float | None = None,
    seed: int = 1,
    dump_every: int = 10,
    thermo_every: int = 1,
    tdamp: float = 100.0,
    pressure: float = 1.0,
    pdamp: float = 1000.0,
    threads: int = 1,
    overwrite: bool = False,
) -> dict:
    """Plain LAMMPS, the reference for run_md: the same MD (start, integrator, dump and thermo.txt) with
    the system's own force field `forcefield` (a ForceField or a lammps_inputs/ file name; see dataset_forcefield) on `threads` threads (OPENMP styles)
    in place of a model. Writes the dump, log, thermo.txt and summary.json into `out`; the summary has
    run_md's statistics and speed, and like run_md's, LAMMPS' failure (`failed_at_step`, `failure`)."""
    data_file, out = Path(data_file), Path(out)
    run = _Dynamics(steps, timestep, ensemble, temperature, seed, dump_every, thermo_every, tdamp, pressure, pdamp)
    run.check()
    _check_out(out, overwrite, data_file)
    commands = load_system_commands(data_file, forcefield) + _dynamics_commands(run, out, model_fix=False)
    out.mkdir(parents=True, exist_ok=True)
    lmp = start_lammps(log=out / "log.lammps", threads=threads)
    _set_up(lmp, commands, data_file, out)
    n_atoms = int(lmp.get_natoms())
    seconds, failure = _timed_run(lmp, steps)
    failed_at, failure = failure or (None, None)
    end_outputs_before(out, failed_at)
    statistics = thermo_statistics(out / "thermo.txt", n_atoms, failed_at, True, ensemble, temperature)
    summary = {
        "forcefield": getattr(forcefield, "source", forcefield),
        "system": str(data_file),
        **_run_record(n_atoms, run, failed_at, seconds),
        "threads": threads,
        **statistics,
        "mean_density_g_cm3": _file_density(data_file, statistics["mean_volume"]),
        "failed_at_step": failed_at,
        "failure": failure,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
