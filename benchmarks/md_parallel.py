"""MD across MPI ranks: water with the shipped PME model (`gnnmd md` under mpiexec) beside plain LAMMPS
(SPC/Fw + PPPM) on the same ranks, one thread per rank, at 648 atoms and replicated to ~20k; and NPT
(water 216, 300 K, 1 atm, from a LAMMPS NPT start, one row per --npt-seeds velocity seed) with
--npt-model (plus the mean-field Lennard-Jones beyond its cutoff, --lj-tail) against LAMMPS' own NPT
density from the same start and seed.

    python benchmarks/md_parallel.py --data DATA [--ranks 1 2] [--replicate 1x1x1 4x4x2]
        [--steps 200 20] [--npt-ps 20] [--npt-model CKPT] [--npt-seeds 1 2] [--lj-tail 10] [--work DIR]

DATA: 216-molecule water from `gnnmd generate water`. Each size gets a data file made by LAMMPS'
`replicate` of DATA's first frame. Model and LAMMPS start from it with velocities at 300 K, NVE. Rows
(speed, speed-up and parallel efficiency against one rank) go to benchmarks/results/md_parallel.json;
--npt-ps 0 leaves the NPT row out, and rows already there for other sizes are kept. NPT densities leave out
each run's first 5 ps and carry a block standard error; a model with several seeds also gets a pooled row
(the mean over its seeds). A finished run (same model, seed and length) is read back, not run again."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, SHIPPED_MODELS, write_results

MODEL = SHIPPED_MODELS / "nequip-pme-water" / "best.pt"
LAMMPS_RUN = """
import sys
from gnnmd.lammps.md_reference import run_lammps_md
from gnnmd.lammps.md_settings import MDSettings
settings = MDSettings(int(sys.argv[2]), temperature=300.0, seed=int(sys.argv[5]), dump_every=10**9,
                      ensemble=sys.argv[4], pressure=1.0)
run_lammps_md(sys.argv[1], "spcfw.ff", settings, sys.argv[3], overwrite=True)
"""


NPT_SKIP_PS = 5.0  # the start of each NPT run left out of its density


def replicated(data_file: Path, reps: tuple[int, int, int], work: Path) -> Path:
    """DATA's system replicated reps times by LAMMPS (write_data), made once."""
    from gnnmd.lammps.engine import lammps_path, load_system_commands, start_lammps

    out = work / f"water_{'x'.join(map(str, reps))}.data"
    if not out.exists():
        lmp = start_lammps()
        lmp.commands_list(load_system_commands(data_file, "spcfw.ff") + ["replicate {} {} {}".format(*reps)])
        lmp.command(f"write_data {lammps_path(out)}")
        lmp.close()
    return out


def _launch(ranks: int, args: list[str]) -> None:
    """Run a Python command on `ranks` MPI ranks (mpiexec of the mpich wheel beside this Python), one
    thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    prefix = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks)] if ranks > 1 else []
    subprocess.run([*prefix, sys.executable, *args], check=True, env=env)


def model_run(model: Path, data_file: Path, steps: int, ranks: int, out: Path, ensemble="nve", extra=(),
              seed: int = 1) -> dict:  # fmt: skip
    args = ["-m", "gnnmd.cli", "md", "--model", str(model), "--system", str(data_file), "--steps", str(steps)]
    args += ["--out", str(out), "--temperature", "300", "--dump-every", str(max(steps // 20, 1)), "--overwrite"]
    args += ["--seed", str(seed)]
    _launch(ranks, [*args, "--ensemble", ensemble, "--pressure", "1", "--no-progress", *extra])
    return json.loads((out / "summary.json").read_text())


def lammps_run(data_file: Path, steps: int, ranks: int, out: Path, ensemble: str = "nve", seed: int = 1) -> dict:
    _launch(ranks, ["-c", LAMMPS_RUN, str(data_file), str(steps), str(out), ensemble, str(seed)])
    return json.loads((out / "summary.json").read_text())


def speed_rows(model: Path, data_file: Path, steps: int, ranks_list: list[int], work: Path) -> list[dict]:
    rows = []
    for ranks in ranks_list:
        name = f"{data_file.stem}_{ranks}ranks"
        run = model_run(model, data_file, steps, ranks, work / f"{name}_model")
        ref = lammps_run(data_file, steps * 10, ranks, work / f"{name}_lammps")
        rows.append({"atoms": run["atoms"], "ranks": ranks, "threads_per_rank": 1, "steps": steps,
                     "steps_per_second": run["steps_per_second"], "atom_steps_per_second": run["atom_steps_per_second"],
                     "lammps_steps_per_second": ref["steps_per_second"], "blown_up": run["blown_up"],
                     "rank_0_atoms": run.get("rank_0_atoms"), "model": str(model)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        base = next(r for r in rows if r["ranks"] == 1)
        row["speedup"] = row["steps_per_second"] / base["steps_per_second"]
        row["parallel_efficiency"] = row["speedup"] / row["ranks"]
        row["lammps_speedup"] = row["lammps_steps_per_second"] / base["lammps_steps_per_second"]
        row["speed_ratio_vs_lammps"] = row["steps_per_second"] / row["lammps_steps_per_second"]
    return rows


def npt_start(data_file: Path, picoseconds: float, out: Path) -> Path:
    """DATA's system after LAMMPS' own NPT (300 K, 1 atm) for `picoseconds`: the density LAMMPS holds."""
    from gnnmd.lammps.engine import lammps_path, load_system_commands, start_lammps

    start = out / "npt_start.data"
    if not start.exists():
        lmp = start_lammps(log=out / "npt_start.log")
        lmp.commands_list(load_system_commands(data_file, "spcfw.ff") + [
            "velocity all create 300 7 mom yes rot yes dist gaussian", "timestep 1.0",
            "fix npt all npt temp 300 300 100 iso 1 1 1000", f"run {int(picoseconds * 1000)}",
            f"write_data {lammps_path(start)}"])  # fmt: skip
        lmp.close()
    return start


def late_density(out: Path, atoms_mass: float, skip_ps: float = NPT_SKIP_PS, blocks: int = 5) -> tuple[float, float]:
    """Mean density (g/cm^3) of a run's thermo.txt (step: 1st column, volume: 7th; 1 fs steps) after its
    first `skip_ps` (the barostat's relaxation from the start), and its standard error from `blocks` block
    means (blocks of several ps, far longer than the volume's ~1 ps correlation time)."""
    table = np.loadtxt(out / "thermo.txt", comments="#", ndmin=2)
    density = atoms_mass / table[table[:, 0] >= skip_ps * 1000, 6] * 1.66053907
    means = np.array([chunk.mean() for chunk in np.array_split(density, blocks)])
    return float(density.mean()), float(means.std(ddof=1) / np.sqrt(blocks))


def npt_row(model: Path, data_file: Path, picoseconds: float, lj_tail: float, work: Path, seed: int = 1) -> dict:
    """Model NPT (with the Lennard-Jones tail beyond its cutoff) and LAMMPS NPT from the same LAMMPS-
    equilibrated start, velocities from `seed`: densities over the second half of each run."""
    from gnnmd.data.reader import read_topology

    start = npt_start(data_file, 10.0, work)
    topology = read_topology(start)
    mass = float(np.asarray(topology.table_masses)[topology.types].sum())
    steps = int(picoseconds * 1000)
    extra = [] if lj_tail <= 0 else ["--lj-tail", str(lj_tail)]
    length = f"s{seed}_{picoseconds:g}ps"
    model_out, ref_out = work / f"npt_model_{model.parent.name}_{length}", work / f"npt_lammps_{length}"
    done = model_out / "summary.json"  # a finished run of this model, seed and length is not run again
    run = json.loads(done.read_text()) if done.exists() else None
    if run is None or run["steps"] != steps or Path(run["checkpoint"]).resolve() != model.resolve():
        run = model_run(model, start, steps, 1, model_out, "npt", extra, seed)
    ref = json.loads((ref_out / "summary.json").read_text()) if (ref_out / "summary.json").exists() else None
    if ref is None or ref["steps"] != steps:
        ref = lammps_run(start, steps, 1, ref_out, ensemble="npt", seed=seed)
    (density, density_se), (ref_density, ref_se) = late_density(model_out, mass), late_density(ref_out, mass)
    return {"ensemble": "npt", "atoms": run["atoms"], "temperature": 300.0, "pressure_atm": 1.0, "ps": picoseconds,
            "seed": seed, "lj_tail": run.get("lj_tail"),
            "density_g_cm3": density, "density_se": density_se,
            "lammps_density_g_cm3": ref_density, "lammps_density_se": ref_se,
            "density_error": density / ref_density - 1.0,
            "density_error_se": float(np.hypot(density_se / ref_density, density * ref_se / ref_density**2)),
            "density_over": f"each run after its first {NPT_SKIP_PS:g} ps; se from 5 block means",
            "model_run": str(model_out), "lammps_run": str(ref_out),
            "mean_temperature": run["mean_temperature"], "lammps_mean_temperature": ref["mean_temperature"],
            "blown_up": run["blown_up"], "failed_at_step": run["failed_at_step"], "warnings": run["warnings"],
            "wall_contacts": run["wall_contacts"], "model": str(model)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--replicate", nargs="*", default=["1x1x1", "4x4x2"], help="none: the NPT row only")
    parser.add_argument("--steps", type=int, nargs="*", default=[200, 20], help="model steps per size")
    parser.add_argument("--npt-ps", type=float, default=20.0)
    parser.add_argument("--npt-model", type=Path, default=None, help="the NPT rows' model (default: --model)")
    parser.add_argument("--npt-seeds", type=int, nargs="+", default=[1], help="one NPT row per velocity seed")
    parser.add_argument("--lj-tail", type=float, default=10.0, help="gnnmd md --lj-tail of the NPT row (0: none)")
    parser.add_argument("--work", type=Path, default=Path("md_parallel"))
    parser.add_argument("--out", type=Path, default=RESULTS / "md_parallel.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data_file = args.data / "segment_000" / "system.data"
    old = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    rows = []
    for reps, steps in zip(args.replicate, args.steps):
        system = replicated(data_file, tuple(int(n) for n in reps.split("x")), args.work)
        rows += speed_rows(args.model, system, steps, args.ranks, args.work)
    if args.npt_ps > 0:
        for seed in args.npt_seeds:
            rows.append(npt_row(args.npt_model or args.model, data_file, args.npt_ps, args.lj_tail, args.work, seed))
    kept = [r for r in old["rows"] if not any(_same(r, n) for n in rows) and r.get("seed") != "pooled"]
    write_results(args.out, "md_parallel", kept + rows + pooled_npt(kept + rows), threads_per_rank=1)


def pooled_npt(rows: list[dict]) -> list[dict]:
    """One row per model and length over its seeds: the mean of the seeds' densities, model and LAMMPS,
    and the standard error of that mean from the runs' block errors; from three seeds on, also the one
    the seeds' own scatter gives (std of their density errors / sqrt(seeds)), which the block errors
    can understate when the barostat's volume is correlated over more than a block."""
    pooled, seeded = [], [r for r in rows if r.get("ensemble") == "npt" and r.get("seed")]
    for key in dict.fromkeys((r["model"], r["ps"]) for r in seeded):
        runs = [r for r in seeded if (r["model"], r["ps"]) == key]
        if len(runs) < 2 or "density_se" not in runs[0]:
            continue
        mean = {k: float(np.mean([r[k] for r in runs])) for k in ("density_g_cm3", "lammps_density_g_cm3")}
        se = {k: float(np.sqrt(sum(r[k] ** 2 for r in runs)) / len(runs)) for k in ("density_se", "lammps_density_se")}
        error = mean["density_g_cm3"] / mean["lammps_density_g_cm3"] - 1.0
        error_se = np.hypot(se["density_se"], se["lammps_density_se"]) / mean["lammps_density_g_cm3"]
        pooled.append({"ensemble": "npt", "seed": "pooled", "seeds": [r["seed"] for r in runs], "model": key[0],
                       "ps": key[1], "atoms": runs[0]["atoms"], "lj_tail": runs[0]["lj_tail"], **mean, **se,
                       "density_error": error, "density_error_se": float(error_se),
                       "density_error_seed_se": _seed_scatter(runs),
                       "density_over": runs[0]["density_over"]})  # fmt: skip
    return pooled


def _seed_scatter(runs: list[dict]) -> float | None:
    errors = [r["density_g_cm3"] / r["lammps_density_g_cm3"] - 1.0 for r in runs]
    return float(np.std(errors, ddof=1) / np.sqrt(len(errors))) if len(errors) >= 3 else None


def _same(a: dict, b: dict) -> bool:
    keys = ("ensemble", "atoms", "ranks", "lj_tail", "seed", "model", "ps")
    return all(a.get(k) == b.get(k) for k in keys)


if __name__ == "__main__":
    main()
