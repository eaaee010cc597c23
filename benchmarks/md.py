"""MD driven by trained models inside LAMMPS, beside plain LAMMPS from the same start: energy drift,
speed and structure (RDF peaks). The defaults use the shipped models in benchmarks/models/.

    python benchmarks/md.py [--water-model CKPT] [--argon-model CKPT] [--water-data DIR] [--argon-data DIR]
                            [--picoseconds 5] [--coulomb lammps|torch-pme]

Each system starts from the data file its dataset wrote (an equilibrated configuration with velocities);
the model run and the LAMMPS reference run the same number of NVE steps with dumps at the same stride.
A PME-trained model's Coulomb part is LAMMPS' pppm (`gnnmd md`'s default) unless --coulomb torch-pme.
Writes benchmarks/results/md.json, or --out (rows {"system", "model", "electrostatics", "ensemble",
"timestep_fs", "steps", "energy_drift_per_atom_per_ps", "speed_ratio_vs_lammps", "rdf": {PAIR: {...}}}),
and md_<system>.png beside it; `--systems water` runs one system and keeps the rows of other systems and
models in md.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import BENCHMARKS, RESULTS, write_results

HERE = BENCHMARKS


def run_system(
    name: str,
    model: Path,
    data_dir: Path,
    picoseconds: float,
    timestep: float,
    dump_every: int,
    work: Path,
    results: Path = RESULTS,
    coulomb: str = "lammps",
) -> dict:
    import torch

    from gnnmd.analysis.rdf import compare_rdfs, compute_rdfs, default_r_max, plot_rdfs
    from gnnmd.lammps.label import reference_force_field
    from gnnmd.lammps.md_model import run_md
    from gnnmd.lammps.md_reference import run_lammps_md
    from gnnmd.lammps.md_settings import MDSettings

    steps = int(round(picoseconds * 1000.0 / timestep))
    data_file = data_dir / "segment_000" / "system.data"
    print(f"{name}: {steps} steps of {timestep} fs with {model}", flush=True)
    summary = run_md(
        model,
        data_file,
        MDSettings(steps, timestep=timestep, dump_every=dump_every),
        work / f"{name}_model",
        overwrite=True,
        progress=True,
        coulomb=coulomb,
    )
    print(f"{name}: plain LAMMPS", flush=True)
    threads = torch.get_num_threads()
    # plain LAMMPS with the system's own force field, NVE from the same start, on as many threads as the
    # model gets (torch's), so that the speed ratio compares like with like
    reference = run_lammps_md(
        data_file,
        reference_force_field(data_dir),
        MDSettings(steps, timestep=timestep, dump_every=dump_every, thermo_every=dump_every),
        work / f"{name}_lammps",
        threads=threads,
        overwrite=True,
    )
    dumps = {
        "model": work / f"{name}_model" / "trajectory.lammpstrj",
        "lammps": work / f"{name}_lammps" / "trajectory.lammpstrj",
    }
    r_max = min(default_r_max(data_file, d) for d in dumps.values())
    skip = 10  # leave the first frames (the shared start) out of the structure
    # a blown-up run's structure is that of the frames before it failed, against the same span of LAMMPS
    stop = None if summary["failed_at_step"] is None else summary["failed_at_step"] // dump_every
    comparison = {}
    if stop is None or stop > skip + 1:
        rdf_model = compute_rdfs(data_file, dumps["model"], r_max=r_max, skip=skip, stop=stop)
        rdf_lammps = compute_rdfs(data_file, dumps["lammps"], r_max=r_max, skip=skip, stop=stop)
        plot_rdfs(rdf_lammps, rdf_model, results / f"md_{name}.png", labels=("LAMMPS", "gnnmd model"))
        comparison = compare_rdfs(rdf_lammps, rdf_model)
    return {
        "system": name,
        "model": str(model.relative_to(HERE.parent) if model.is_relative_to(HERE.parent) else model),
        "model_family": summary["model_family"],
        # who computed a PME-trained model's Coulomb part: "lammps-pppm", "torch-pme", or None (the model all)
        "electrostatics": summary["electrostatics"],
        "electrostatics_settings": summary["electrostatics_settings"],
        "ensemble": "nve",
        "timestep_fs": timestep,
        "steps": steps,
        "atoms": summary["atoms"],
        "energy_drift_per_atom_per_ps": summary["energy_drift_per_atom_per_ps"],
        "lammps_energy_drift_per_atom_per_ps": reference["energy_drift_per_atom_per_ps"],
        "mean_temperature": summary["mean_temperature"],
        "lammps_mean_temperature": reference["mean_temperature"],
        "blown_up": summary["blown_up"],
        "failed_at_step": summary["failed_at_step"],
        "failure": summary["failure"],
        "steps_per_second": summary["steps_per_second"],
        "lammps_steps_per_second": reference["steps_per_second"],
        "speed_ratio_vs_lammps": summary["steps_per_second"] / reference["steps_per_second"],
        "threads": threads,
        "rdf": {
            pair: {k: row[k] for k in ("peak_r", "peak_r_ref", "peak_g", "peak_g_ref", "integrated_abs_diff")}
            for pair, row in comparison.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--water-model", type=Path, default=HERE / "models" / "nequip-pme-water" / "best.pt")
    parser.add_argument("--argon-model", type=Path, default=HERE / "models" / "nequip-argon-finetuned" / "best.pt")
    parser.add_argument("--water-data", type=Path, required=True, help="water dataset (its segment_000 is the start)")
    parser.add_argument("--argon-data", type=Path, required=True, help="argon dataset (its segment_000 is the start)")
    parser.add_argument("--picoseconds", type=float, default=5.0)
    parser.add_argument("--water-timestep", type=float, default=1.0, help="fs (flexible O-H bonds)")
    parser.add_argument("--argon-timestep", type=float, default=2.0, help="fs")
    parser.add_argument("--dump-every", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("md_benchmark"), help="where trajectories go")
    parser.add_argument("--systems", default="water,argon")
    parser.add_argument(
        "--coulomb",
        choices=("lammps", "torch-pme"),
        default="lammps",
        help="Coulomb part of a PME-trained model: LAMMPS' pppm (gnnmd md's default) or torch-pme's",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "md.json", help="results JSON (the plots go beside it)")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)  # the plots go there first
    rows = []
    for name in args.systems.split(","):
        model = args.water_model if name == "water" else args.argon_model
        data = args.water_data if name == "water" else args.argon_data
        timestep = args.water_timestep if name == "water" else args.argon_timestep
        row = run_system(
            name, model, data, args.picoseconds, timestep, args.dump_every, args.work, args.out.parent, args.coulomb
        )
        rows.append({**row, "command": " ".join(["python", *sys.argv])})
        print(json.dumps(rows[-1], indent=1), flush=True)
    # a run keeps the rows of other systems and models (each row says how it was made)
    run = {(row["system"], row["model"]) for row in rows}
    kept = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    write_results(args.out, "md", [row for row in kept if (row["system"], row["model"]) not in run] + rows)


if __name__ == "__main__":
    main()
