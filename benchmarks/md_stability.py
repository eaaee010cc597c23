"""Is MD with a model trustworthy? Water NVE at several temperatures and seeds, each beside LAMMPS' own
force field from the same start: time to failure, energy drift, mean temperature, runaway, wall contacts,
closest approaches, bond lengths and angles, and the O-O RDF peak.

    python benchmarks/md_stability.py --data DATA --stage before --models M.pt [M2.pt ...]
        [--temperatures 300 370 400] [--seeds 1 2] [--picoseconds 20] [--work DIR] [--jobs 2]

Each (temperature, seed) gets one start: the dataset's first data file, equilibrated by LAMMPS (NVT, its
own force field, --equil-ps) and written with its velocities; the model (`gnnmd md`, several models: a
committee) and LAMMPS then run NVE from it for --picoseconds. Starts and LAMMPS runs are shared by the
stages, so "before" and "after" (active learning) are compared from the same starts. Rows are merged into
benchmarks/results/md_stability.json by (stage, model, temperature, seed); md_stability.png plots temperatures.
Model runs go through `gnnmd md` side by side (--jobs), and a finished one is not run again."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import RESULTS, write_results

from gnnmd.study.steps import Step, run_steps


def equilibrated_start(data_file: Path, forcefield: str, temperature: float, seed: int, ps: float, out: Path) -> Path:
    """LAMMPS NVT at `temperature` for `ps` from data_file; the final state with velocities (start.data)."""
    from gnnmd.lammps.engine import lammps_path, load_system_commands, start_lammps

    start = out / "start.data"
    if start.exists():
        return start
    out.mkdir(parents=True, exist_ok=True)
    lmp = start_lammps(log=out / "log.lammps")
    try:
        lmp.commands_list(
            load_system_commands(data_file, forcefield)
            + [
                f"velocity all create {temperature} {seed} mom yes rot yes dist gaussian",
                f"fix nvt all nvt temp {temperature} {temperature} 100.0",
                "timestep 1.0",
                f"run {int(ps * 1000)}",
                f"write_data {lammps_path(out / 'start.partial')}",
            ]
        )
    finally:
        lmp.close()
    (out / "start.partial").replace(start)
    return start


def _structure(data_file: Path, dump: Path, stop: int | None) -> dict:
    from gnnmd.analysis.structure import trajectory_structure

    return trajectory_structure(data_file, dump, skip=1, stop=stop)


def _oo_peak(start: Path, model_dump: Path, lammps_dump: Path, stop: int | None) -> dict:
    from gnnmd.analysis.rdf import compare_rdfs, compute_rdfs, default_r_max

    r_max = min(default_r_max(start, d) for d in (model_dump, lammps_dump))
    skip = 10
    if stop is not None and stop <= skip + 1:
        return {}
    ref = compute_rdfs(start, lammps_dump, r_max=r_max, skip=skip, stop=stop)
    run = compute_rdfs(start, model_dump, r_max=r_max, skip=skip, stop=stop)
    row = compare_rdfs(ref, run).get("O-O", {})
    return {"oo_peak_r": row.get("peak_r"), "oo_peak_r_ref": row.get("peak_r_ref"), "oo_peak_g": row.get("peak_g"),
            "oo_peak_g_ref": row.get("peak_g_ref")}  # fmt: skip


def row_of(stage: str, models: list, temperature: float, seed: int, start: Path, run: Path, ref: Path, ps: float,
           dump_every: int) -> dict:  # fmt: skip
    model = json.loads((run / "summary.json").read_text())
    lammps = json.loads((ref / "summary.json").read_text())
    failed = model["failed_at_step"]
    stop = None if failed is None else failed // dump_every
    structure = _structure(start, run / "trajectory.lammpstrj", stop)
    structure_ref = _structure(start, ref / "trajectory.lammpstrj", stop)
    return {
        "stage": stage,
        "model": [str(m) for m in models],
        "temperature": temperature,
        "seed": seed,
        "ps": ps,
        "ps_run": (failed if failed is not None else model["steps"]) * model["timestep_fs"] / 1000.0,
        "blown_up": model["blown_up"],
        "failed_at_step": failed,
        "failure": model["failure"],
        "runaway": model.get("runaway"),
        "energy_drift_per_atom_per_ps": model["energy_drift_per_atom_per_ps"],
        "lammps_energy_drift_per_atom_per_ps": lammps["energy_drift_per_atom_per_ps"],
        "mean_temperature": model["mean_temperature"],
        "lammps_mean_temperature": lammps["mean_temperature"],
        "wall_contacts": model.get("wall_contacts"),
        "closest_approach": structure["closest_approach"],
        "closest_approach_ref": structure_ref["closest_approach"],
        "bond_length": structure["bond_length"],
        "bond_length_ref": structure_ref["bond_length"],
        "angle": structure["angle"],
        "angle_ref": structure_ref["angle"],
        **_oo_peak(start, run / "trajectory.lammpstrj", ref / "trajectory.lammpstrj", stop),
        "steps_per_second": model["steps_per_second"],
        "committee": model.get("committee"),
        "model_family": model.get("model_family"),
        "run": str(run),
        "lammps_run": str(ref),
        "command": " ".join(["python", *sys.argv]),
    }


def plot(rows: list[dict], path: Path) -> None:
    import numpy as np

    from gnnmd.analysis.plotting import pyplot

    plt = pyplot()
    temperatures = sorted({row["temperature"] for row in rows})
    fig, axes = plt.subplots(1, len(temperatures), figsize=(5 * len(temperatures), 4), squeeze=False)
    for ax, temperature in zip(axes[0], temperatures):
        for row in (r for r in rows if r["temperature"] == temperature):
            runs = (row["run"], row["lammps_run"])
            for folder, style, kind in zip(
                runs, ("-", ":"), (f"{row['stage']} {row.get('model_family', '')}", "lammps")
            ):
                table = np.loadtxt(Path(folder) / "thermo.txt", ndmin=2)
                label = f"{kind} seed {row['seed']}"
                ax.plot(table[:, 3] / 1000.0, table[:, 1], style, lw=0.8, label=label)
        ax.set(title=f"NVE from {temperature:g} K", xlabel="time (ps)", ylabel="temperature (K)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="water dataset (its first data file is the start)")
    parser.add_argument("--stage", required=True, help="row label, e.g. before or after")
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="one model, or a committee")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 370.0, 400.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--picoseconds", type=float, default=20.0)
    parser.add_argument("--equil-ps", type=float, default=5.0, help="LAMMPS NVT before each start")
    parser.add_argument("--dump-every", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("md_stability"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "md_stability.json")
    args = parser.parse_args()

    from gnnmd.data.reader import read_manifest
    from gnnmd.lammps.label import reference_force_field
    from gnnmd.lammps.md_reference import run_lammps_md
    from gnnmd.lammps.md_settings import MDSettings

    data_file = args.data / read_manifest(args.data)["segments"][0]["data_file"]
    forcefield = reference_force_field(args.data)
    steps = int(round(args.picoseconds * 1000))
    work = args.work.resolve()
    cases = [(t, s) for t in args.temperatures for s in args.seeds]
    starts = {}
    for t, s in cases:
        starts[t, s] = equilibrated_start(data_file, forcefield, t, s, args.equil_ps, work / "starts" / f"T{t:g}_s{s}")
        ref = work / "runs" / f"lammps_T{t:g}_s{s}"
        if not (ref / "summary.json").exists():
            run_lammps_md(starts[t, s], forcefield, MDSettings(steps, dump_every=args.dump_every), ref, overwrite=True)
    md = []
    for t, s in cases:
        out = work / "runs" / f"{args.stage}_T{t:g}_s{s}"
        argv = ["md", "--model", *map(str, args.models), "--system", str(starts[t, s]), "--steps", str(steps)]
        argv += ["--out", str(out), "--dump-every", str(args.dump_every), "--overwrite", "--no-progress"]
        md.append(Step(f"{args.stage}_T{t:g}_s{s}", argv, out / "summary.json", accept=(0, 1)))
    run_steps(f"{args.stage}: MD", md, args.jobs, work / "logs")
    new = [
        row_of(args.stage, args.models, t, s, starts[t, s], work / "runs" / f"{args.stage}_T{t:g}_s{s}",
               work / "runs" / f"lammps_T{t:g}_s{s}", args.picoseconds, args.dump_every)
        for t, s in cases
    ]  # fmt: skip
    old = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    for row in old["rows"]:  # rows from before they recorded their folders: those of the work they were run in
        runs = Path(old.get("work", work)) / "runs"
        row.setdefault("run", str(runs / f"{row['stage']}_T{row['temperature']:g}_s{row['seed']}"))
        row.setdefault("lammps_run", str(runs / f"lammps_T{row['temperature']:g}_s{row['seed']}"))
    old = old["rows"]
    keys = {_key(r) for r in new}
    rows = [r for r in old if _key(r) not in keys] + new
    write_results(args.out, "md_stability", rows, work=str(work))
    plot(rows, args.out.with_suffix(".png"))


def _key(row: dict) -> tuple:
    """Rows are one per stage, model, temperature and seed."""
    return row["stage"], tuple(row["model"]), row["temperature"], row["seed"]


if __name__ == "__main__":
    main()
