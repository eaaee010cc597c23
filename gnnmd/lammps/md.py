"""A trained model as LAMMPS' force provider: LAMMPS integrates (nve/nvt, its own thermostat), and at
every step `fix external pf/callback` asks gnnmd for the forces (and energy) of the current positions
and cell. The graph is rebuilt each step from what LAMMPS holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gnnmd.data.reader import read_topology
from gnnmd.inference.forces import ModelForces
from gnnmd.lammps.engine import start_lammps


def _box_matrix(lmp) -> np.ndarray:
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lx, ly, lz = np.subtract(boxhi, boxlo)
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


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
    allow_unknown_types: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Run `steps` of MD of the system in `data_file` with the model's forces; write the dump, log,
    thermo table and summary.json into `out`. With no `temperature` the data file's velocities are
    kept (an equilibrated start); NVT needs a temperature.

    A run whose model fails part-way (non-finite forces, a molecule torn apart) is a result, not a crash:
    the summary says `blown_up`, the step and the reason, and its statistics cover the steps before."""
    data_file, out = Path(data_file), Path(out)
    if ensemble not in ("nve", "nvt"):
        raise ValueError(f"ensemble must be nve or nvt, got {ensemble!r}")
    if ensemble == "nvt" and temperature is None:
        raise ValueError("--ensemble nvt needs --temperature")
    if steps < 1 or timestep <= 0 or dump_every < 1:
        raise ValueError("steps, timestep and dump-every must be positive")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace its files")
    # everything that can be wrong with the inputs is found before LAMMPS starts
    topology = read_topology(data_file)
    forces_of = ModelForces(checkpoint, topology, str(data_file), allow_unknown_types)
    out.mkdir(parents=True, exist_ok=True)

    lmp = start_lammps(log=out / "log.lammps")
    commands = [
        "units real",
        "atom_style full",
        "boundary p p p",
        f"read_data {data_file} nocoeff",
        "pair_style none",
    ]
    if len(topology.bonds):
        commands += ["bond_style zero", "bond_coeff *"]
    if len(topology.angles):
        commands += ["angle_style zero", "angle_coeff *"]
    if temperature is not None:
        commands.append(f"velocity all create {temperature} {seed} mom yes rot yes dist gaussian")
    commands += [
        "fix model all external pf/callback 1 1",
        "fix_modify model energy yes",
        (
            f"fix integrate all nvt temp {temperature} {temperature} {tdamp}"
            if ensemble == "nvt"
            else "fix integrate all nve"
        ),
        f"timestep {timestep}",
        "thermo_style custom step temp pe ke etotal press",
        f"thermo {max(1, steps // 20)}",
        f"dump trajectory all custom {dump_every} {out / 'trajectory.lammpstrj'} id mol type q x y z fx fy fz",
        "dump_modify trajectory sort id format float %.10g",
        "variable time equal step*dt",
        "variable ke equal ke",
        "variable etotal equal etotal",
        f"fix thermo all ave/time {thermo_every} 1 {thermo_every} c_thermo_temp c_thermo_pe v_time v_ke v_etotal "
        f'file {out / "thermo.txt"} format " %.10g"',
    ]
    lmp.commands_list(commands)
    n_atoms = topology.n_atoms
    bar = tqdm(total=steps, desc="MD", unit="step", disable=not progress)
    failure: list[tuple[int, BaseException]] = []
    has_energy = [False]

    def callback(_caller, step, nlocal, tags, x, f):
        if failure:  # LAMMPS runs on to the end of `run`: skip the model, the run is already lost
            f[:nlocal] = 0.0
            return
        try:
            order = np.asarray(tags, dtype=np.int64) - 1
            positions = np.empty((n_atoms, 3))
            positions[order] = x[:nlocal]
            forces, energy = forces_of(positions, _box_matrix(lmp))
            if not np.all(np.isfinite(forces)) or (energy is not None and not np.isfinite(energy)):
                raise FloatingPointError("the model's forces or energy are not finite")
            f[:nlocal] = forces[order]
            if energy is not None:
                has_energy[0] = True
                lmp.fix_external_set_energy_global("model", energy)
            bar.n = min(int(step), steps)
            bar.refresh()
        except Exception as err:  # LAMMPS cannot take a Python exception; finish the run with zero forces
            failure.append((int(step), err))
            f[:nlocal] = 0.0

    lmp.set_fix_external_callback("model", callback, None)
    started = time.perf_counter()
    try:
        lmp.command(f"run {steps}")
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    lmp.close()

    thermo = np.loadtxt(out / "thermo.txt", comments="#", ndmin=2)
    failed_at = failure[0][0] if failure else None
    if failed_at is not None:  # what LAMMPS logged after the failure ran on zero forces
        thermo = thermo[thermo[:, 0] < failed_at]
    step, temp, pe, time_fs, ke, etotal = thermo.T
    blown_up = failed_at is not None or not np.all(np.isfinite(thermo))
    steps_run = steps if failed_at is None else max(failed_at, 1)  # the steps after a failure cost nothing
    drift = (
        float(np.polyfit(time_fs / 1000.0, etotal / n_atoms, 1)[0])
        if len(thermo) > 2 and not blown_up
        else None
    )
    summary = {
        "checkpoint": str(checkpoint),
        "system": str(data_file),
        "model_family": forces_of.info["family"],
        "atoms": n_atoms,
        "ensemble": ensemble,
        "timestep_fs": timestep,
        "steps": steps,
        "seconds": round(seconds, 3),
        "steps_per_second": steps_run / seconds,
        "atom_steps_per_second": steps_run * n_atoms / seconds,
        "model_energy": has_energy[0],
        "energy_drift_per_atom_per_ps": drift if has_energy[0] else None,
        "max_abs_energy_change_per_atom": (
            float(np.abs(etotal - etotal[0]).max() / n_atoms) if has_energy[0] and len(etotal) else None
        ),
        "mean_temperature": float(temp.mean()) if len(temp) else None,
        "blown_up": blown_up,
        "failed_at_step": failed_at,
        "failure": None if failed_at is None else f"{type(failure[0][1]).__name__}: {failure[0][1]}",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
