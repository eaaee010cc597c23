"""MD with a trained model's forces: LAMMPS integrates (nve/nvt/npt, its own thermostat and barostat),
and at every step `fix external pf/callback` asks gnnmd (md_callback) for the forces (and energy) of
the current positions and cell. The graph is rebuilt each step from what LAMMPS holds.

A model trained with PME learned reference minus Coulomb (with LAMMPS' special_bonds exclusions). In MD
LAMMPS computes that Coulomb part itself by default (`coulomb="lammps"`: pair coul/long + kspace pppm
with the checkpoint's real-space cutoff, accuracy and special factors), and the callback gives only the
learned part; `coulomb="torch-pme"` adds torch-pme's Coulomb to the model's forces in the callback
instead (as training and evaluation do). Both compute the same Ewald sum, each to its accuracy.

A run that fails (the model's forces, a temperature jump, or LAMMPS' own error such as a molecule torn
apart) is a result: LAMMPS stops at the failure, the dump and thermo.txt end before it, and the summary
says when and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gnnmd.data.reader import read_topology
from gnnmd.devices import resolve_device
from gnnmd.files import atomic_write_text
from gnnmd.inference.committee import CommitteeForces
from gnnmd.inference.domain import DomainForces
from gnnmd.inference.forces import ModelForces
from gnnmd.inference.lj_tail import LennardJonesTail, for_model
from gnnmd.lammps.cg_prior import PRIOR_FOLDER, prior_cutoff, prior_force_field, write_prior_tables
from gnnmd.lammps.engine import lammps_world_size, start_lammps
from gnnmd.lammps.md_callback import DomainCallback, ModelCallback, box_matrix
from gnnmd.lammps.md_commands import (
    COULOMB,
    coulomb_settings,
    dynamics_commands,
    model_system_commands,
    set_up,
    timed_run,
)
from gnnmd.lammps.md_output import (
    check_out,
    density,
    fresh_folder,
    log_warnings,
    run_record,
    working_folder,
    write_summary,
)
from gnnmd.lammps.md_settings import MDSettings
from gnnmd.lammps.ranks import check_box_for_clusters, ghost_commands, world
from gnnmd.lammps.thermo import end_outputs_before, thermo_statistics
from gnnmd.models.checkpoint import read_info
from gnnmd.progress import hidden


def _model_run_inputs(checkpoint, data_file: Path, run: MDSettings, out: Path, allow_unknown_types: bool,
                      coulomb: str, device: str, precision: str):  # fmt: skip
    """What a model run needs before LAMMPS starts, where all that can be wrong with the inputs is found:
    the topology, the model's force function for the callback (with LAMMPS' Coulomb the learned part
    alone, with torch-pme's the sum), the Coulomb settings (coulomb_settings), the CG prior the model
    corrects (None without one; its tables go to `out`/prior) and the LAMMPS commands."""
    if coulomb not in COULOMB:
        raise ValueError(f"coulomb must be one of {', '.join(COULOMB)}, got {coulomb!r}")
    checkpoints = list(checkpoint) if isinstance(checkpoint, (list, tuple)) else [checkpoint]
    prior, type_table = _prior_of(checkpoints)
    # a CG system for a table prior (coarse-grain fit's cg.data) has no Pair Coeffs: its sites are the model's types
    topology = read_topology(data_file, pair_coeffs=None if prior is None else _site_coeffs(type_table))
    with_torch_pme = coulomb == "torch-pme"
    options = dict(electrostatics=with_torch_pme, device=device, precision=precision)
    ranks = lammps_world_size()
    if ranks > 1:
        _check_domain_run(checkpoints, with_torch_pme, device, ranks)
        forces_of = DomainForces(checkpoints[0], topology, str(data_file), allow_unknown_types, precision=precision)
    elif len(checkpoints) > 1:
        forces_of = CommitteeForces(checkpoints, topology, str(data_file), allow_unknown_types, **options)
    else:
        forces_of = ModelForces(checkpoints[0], topology, str(data_file), allow_unknown_types, **options)
    electrostatics = coulomb_settings(forces_of.info.electrostatics, topology, coulomb)
    _use_virial(forces_of, run.ensemble, with_torch_pme and electrostatics is not None)
    prior_ff = None if prior is None else prior_force_field(prior, out / PRIOR_FOLDER)
    commands = model_system_commands(data_file, topology, electrostatics, prior=prior_ff)
    if ranks > 1:  # the ghosts cover the model's reach and the prior's pair cutoff alike
        commands += ghost_commands(max(forces_of.ghost_reach, 0.0 if prior is None else prior_cutoff(prior)))
    return topology, forces_of, electrostatics, prior, commands + dynamics_commands(run, out, model_fix=True)


def _prior_of(checkpoints: list) -> tuple[dict | None, list]:
    """The CG prior the model(s) correct, the same for every member of a committee, and the first's type
    table; a prior under a PME-trained model is refused (MD runs the prior's pair table, not PME beside it)."""
    infos = [read_info(c) for c in checkpoints]
    prior = infos[0].prior
    if any(info.prior != prior for info in infos[1:]):
        raise ValueError(f"committee members correct different CG priors ({', '.join(map(str, checkpoints))})")
    if prior is not None and infos[0].electrostatics:
        raise ValueError(f"{checkpoints[0]}: corrects a CG prior but learned reference minus PME Coulomb, which "
                         "gnnmd md cannot run beside the prior's pair table; train it with --electrostatics none")  # fmt: skip
    return prior, infos[0].type_table


def _site_coeffs(type_table: list[dict]) -> dict:
    return {int(row["type_id"]): (float(row["epsilon"]), float(row["sigma"])) for row in type_table}


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
        why = "with --coulomb torch-pme" if torch_pme_coulomb else f"for a {forces_of.info.family} model"
        raise ValueError(f"NPT needs the model's virial, which gnnmd md has no way to compute {why}; "
                         "an energy model (nequip) with LAMMPS' Coulomb (--coulomb lammps) has it")  # fmt: skip
    forces_of.virial = has_virial


def run_md(
    checkpoint,
    data_file,
    settings: MDSettings,
    out,
    *,
    allow_unknown_types: bool = False,
    coulomb: str = "lammps",
    device: str = "cpu",
    precision: str = "float32",
    lj_tail: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Run MD (`settings`) of the system in `data_file` with the model's forces (computed on `device`, in
    `precision`: gnnmd.inference.forces.model_dtype), plus the mean-field Lennard-Jones between the model's
    cutoff and `lj_tail` (A, the reference's LJ cutoff; gnnmd.inference.lj_tail) if given; write
    the dump, log, thermo table and summary.json into `out` (md_output: complete, or not at all). With no
    temperature the data file's velocities are kept (an equilibrated start). A PME-trained model's
    Coulomb part is LAMMPS' (`coulomb="lammps"`, pppm) or torch-pme's ("torch-pme"); the summary's
    `electrostatics` says which ("lammps-pppm", "torch-pme", or None: the model gives all).

    A run that fails part-way (the model's non-finite forces, a temperature jump, or LAMMPS' own error,
    e.g. a molecule torn apart) is a result, not a crash: LAMMPS stops there, the dump and thermo.txt end
    before the failure, and the summary says `blown_up`, the step and the reason; its statistics cover
    the steps before."""
    data_file, out = Path(data_file), Path(out)
    check_out(out, overwrite, data_file)
    work = working_folder(out)
    inputs = _model_run_inputs(checkpoint, data_file, settings, work, allow_unknown_types, coulomb, device, precision)
    topology, forces_of, electrostatics, prior, commands = inputs
    tail = _check_lj_tail(lj_tail, forces_of, topology)
    comm = world() if isinstance(forces_of, DomainForces) else None
    root = comm is None or comm.rank == 0  # writes the outputs LAMMPS does not (LAMMPS writes on rank 0)
    if comm is not None:
        comm.Barrier()  # every rank has checked `out` before rank 0 writes beside it
    with fresh_folder(out, root):
        if prior is not None:
            _write_tables(prior, work, root, comm)
        lmp = start_lammps(log=work / "log.lammps")
        set_up(lmp, commands, data_file, out, settings)
        callback = _callback(lmp, forces_of, topology.n_atoms, settings.steps, progress and root, comm, data_file)
        callback.tail = tail
        seconds, lammps_failure = timed_run(lmp, settings.steps, callback.bar)
        failure = callback.first_failure(lammps_failure)
        summary = None
        if root:
            summary = _finish(checkpoint, data_file, topology, forces_of, electrostatics, settings, work, callback,
                              seconds, failure, 1 if comm is None else comm.size, prior)  # fmt: skip
    return summary if comm is None else comm.bcast(summary, root=0)


def _write_tables(prior: dict, work: Path, root: bool, comm) -> None:
    """The prior's tables into the run's folder (by the first rank, which has made it), before any rank
    starts LAMMPS."""
    if root:
        write_prior_tables(prior, work / PRIOR_FOLDER)
    if comm is not None:
        comm.Barrier()


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
        callback = ModelCallback(lmp, forces_of, n_atoms, bar)
    else:
        try:
            check_box_for_clusters(box_matrix(lmp), forces_of.cutoff + forces_of.skin, str(data_file))
        except ValueError:
            lmp.close()
            raise
        callback = DomainCallback(lmp, forces_of, n_atoms, bar, comm)
    lmp.set_fix_external_callback("model", callback, None)
    return callback


def _finish(checkpoint, data_file, topology, forces_of, electrostatics, run, out, callback, seconds, failure,
            ranks: int, prior: dict | None = None) -> dict:  # fmt: skip
    """On the first rank, after the run: cut the outputs at a failure, write summary.json (_model_summary,
    with density, ranks and the LJ tail) and the warnings at the end of the log."""
    end_outputs_before(out, failure[0])
    if ranks > 1 and forces_of.walls is not None:
        forces_of.wall_contacts = callback.wall_steps
    summary = _model_summary(checkpoint, data_file, forces_of, electrostatics, run, out, callback, seconds, failure)
    summary["mean_density_g_cm3"] = density(topology, summary["mean_volume"])
    summary["mpi_ranks"] = ranks
    summary["lj_tail"] = _tail_record(callback.tail, summary["mean_volume"])
    # the CG prior under the model (LAMMPS computes it; its tables are in prior/), None without one
    summary["prior"] = None if prior is None else {"fit": prior.get("fit"), "tables": PRIOR_FOLDER,
                                                   "source": prior["force_field"].get("source")}  # fmt: skip
    if ranks > 1:  # the first rank's share at its last rebuild
        summary["rank_0_atoms"] = forces_of.sizes
    write_summary(out, summary)
    log_warnings(out / "log.lammps", summary["warnings"])
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
        "model_family": forces_of.info.family,
        "device": str(getattr(forces_of, "device", "cpu")),
        "electrostatics": electrostatics and electrostatics["method"],
        "electrostatics_settings": electrostatics,
        **run_record(n_atoms, run, failed_at, seconds),
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
