"""A GNN correction over an MS-CG prior (CGnet's recipe, docs/coarse_grain.md "The learned correction"): the
residual of a CG dataset under its fit, nequip trained on it, and CG MD with prior + model beside the prior
alone, from the same starts, against the mapped frames' site-site RDF.

    python benchmarks/cg_correction.py --cg CG_DATASET --fit FIT_DIR --work DIR [--train-minutes 20]
        [--steps 10000] [--starts 1 2 3] [--cutoff 5] [--timestep 2] [--threads 1]

CG_DATASET and FIT_DIR are what benchmarks/coarse_grain.py leaves in its --work (cg/, fit/). The residual is
`gnnmd coarse-grain residual`; training is `gnnmd train` (nequip, channels 8, 2 layers, --electrostatics none,
the shipped models' recipe for --train-minutes); MD is `gnnmd md` (NVT at the atomistic temperature, in the
mean box of the mapped frames, start k from mapped frame (k-1) * frames / starts, as coarse_grain.py) and, for
the prior alone, plain LAMMPS with cg.ff. Every stage is skipped when its output exists, so a killed run
resumes. Writes benchmarks/results/cg_correction.json: the residual on the validation frames before (its RMS:
the prior's error) and after (the model's RMSE), per start failure, mean temperature and the RDF first peak of
both MD runs, and the mapped frames' peak."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from coarse_grain import mapped_rdfs, md_data_file
from common import RESULTS, evaluation, write_results

from gnnmd.analysis.rdf import compute_rdfs, peak
from gnnmd.cli import main as gnnmd
from gnnmd.data import load_frames
from gnnmd.data.coarse_grain import load_cg_frames
from gnnmd.data.forcefield import ForceField
from gnnmd.data.reader import read_manifest
from gnnmd.inference.evaluate import select_frames
from gnnmd.lammps.md_reference import run_lammps_md
from gnnmd.lammps.md_settings import MDSettings
from gnnmd.models.checkpoint import read_info


def residual(args) -> Path:
    out = args.work / "resid"
    if not (out / "manifest.json").exists():
        argv = ["coarse-grain", "residual", "--data", str(args.cg), "--fit", str(args.fit), "--out", str(out)]
        assert gnnmd([*argv, "--overwrite"]) == 0
    return out


def trained(resid: Path, args) -> Path:
    """nequip on the residual, the shipped models' recipe (one frame per step, lr 0.005 after one warm-up epoch,
    decay 0.97 per epoch) for --train-minutes."""
    runs = args.work / "runs"
    best = runs / "nequip" / "best.pt"
    if not best.exists():
        argv = ["train", "--model", "nequip", "--data", str(resid), "--name", "nequip", "--runs-dir", str(runs)]
        argv += ["--electrostatics", "none", "--cutoff", str(args.cutoff), "--hyper", "channels=8"]
        argv += ["--hyper", "layers=2", "--max-minutes", str(args.train_minutes), "--epochs", "1000"]
        argv += ["--patience", "1000", "--batch-size", "1", "--lr", "0.005", "--warmup", "1", "--lr-decay", "0.97"]
        assert gnnmd([*argv, "--threads", str(args.threads), "--no-progress", "--quiet", "--overwrite"]) == 0
    return best


def residual_record(resid: Path, best: Path) -> dict:
    """On the run's validation frames: the RMS of the residual (the prior's error against the mapped forces), of
    the mapped forces, and the model's RMSE on the residual (the error of prior + model)."""
    frames, val = select_frames(load_frames(resid), read_info(best), "val")
    mapped = load_frames(read_manifest(resid)["residual_of"]["dataset"])
    _, result = evaluation(["--model", str(best), "--data", str(resid), "--split", "val"])
    before = float(np.sqrt(np.mean(frames.forces[val].astype(np.float64) ** 2)))
    return {"val_frames": len(val), "rms_mapped_force": float(np.sqrt(np.mean(mapped.forces[val].astype(np.float64) ** 2))),
            "rms_residual_force_prior_only": before, "model_force_rmse": result["force_rmse"],
            "model_force_mae": result["force_mae"], "relative_after_to_before": result["force_rmse"] / before,
            "training": json.loads((best.parent / "summary.json").read_text())}  # fmt: skip


def temperature_of(cg: Path, given: float | None) -> float:
    """--temperature, else the mean thermostat target of the atomistic dataset the CG one was mapped from."""
    if given is not None:
        return given
    source = read_manifest(cg).get("coarse_grained_from", {}).get("dataset")
    segments = read_manifest(source)["segments"] if source and Path(source).is_dir() else []
    targets = [s["temperature"] for s in segments if isinstance(s.get("temperature"), (int, float))]
    return float(np.mean(targets)) if targets else 300.0


def md_runs(frames, best: Path, k: int, seed: int, temperature: float, args) -> dict:
    """From one start: prior + model (gnnmd md) and the prior alone (LAMMPS, cg.ff); their summaries."""
    work = args.work / "md"
    work.mkdir(parents=True, exist_ok=True)
    start = work / f"start_s{seed}.data"
    md_data_file(frames, (k * len(frames)) // len(args.starts), start)
    dump_every = max(1, args.steps // 200)
    model_out, prior_out = work / f"model_s{seed}", work / f"prior_s{seed}"
    if not (model_out / "summary.json").exists():
        argv = ["md", "--model", str(best), "--system", str(start), "--steps", str(args.steps), "--out", str(model_out)]
        argv += ["--ensemble", "nvt", "--temperature", str(temperature), "--seed", str(seed), "--timestep",
                 str(args.timestep), "--dump-every", str(dump_every), "--overwrite", "--no-progress"]  # fmt: skip
        assert gnnmd(argv) in (0, 1)  # 1: the run blew up, a result
    if not (prior_out / "summary.json").exists():
        settings = MDSettings(args.steps, timestep=args.timestep, ensemble="nvt", temperature=temperature, seed=seed,
                              dump_every=dump_every)  # fmt: skip
        run_lammps_md(start, ForceField.read(args.fit / "cg.ff"), settings, prior_out, threads=args.threads,
                      overwrite=True)  # fmt: skip
    return {name: json.loads((out / "summary.json").read_text()) | {"out": out}
            for name, out in (("model", model_out), ("prior", prior_out))}  # fmt: skip


def start_row(runs: dict, seed: int, topology: Path, r_max: float) -> dict:
    row = {"seed": seed}
    for name, summary in runs.items():
        row[name] = {"failed_at_step": summary["failed_at_step"], "failure": summary["failure"],
                     "mean_temperature": summary["mean_temperature"], "steps_per_second": summary["steps_per_second"]}  # fmt: skip
        if summary["failed_at_step"] is None:
            rdfs = compute_rdfs(topology, summary["out"] / "trajectory.lammpstrj", r_max=r_max, skip=50)
            row[name]["rdf_peaks"] = {pair: dict(zip(("r", "g"), peak(*rdf))) for pair, rdf in rdfs.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cg", type=Path, required=True, help="the CG dataset (gnnmd coarse-grain)")
    parser.add_argument("--fit", type=Path, required=True, help="its fit folder (gnnmd coarse-grain fit)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the residual, the run and MD")
    parser.add_argument("--train-minutes", type=float, default=20.0)
    parser.add_argument("--cutoff", type=float, default=5.0, help="the model's graph cutoff, A")
    parser.add_argument("--steps", type=int, default=10000, help="CG MD steps per start")
    parser.add_argument("--starts", type=int, nargs="+", default=[1, 2, 3], help="velocity seeds")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs")
    parser.add_argument("--temperature", type=float, help="K (default: the atomistic dataset's mean target)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "cg_correction.json")
    args = parser.parse_args()
    args.work, args.fit = args.work.resolve(), args.fit.resolve()
    resid = residual(args)
    best = trained(resid, args)
    frames, temperature = load_cg_frames(args.cg), temperature_of(args.cg, args.temperature)
    r_max = min(10.0, 0.49 * float(np.min(np.diag(frames.mean_cell()))))
    topology = args.cg / read_manifest(args.cg)["segments"][0]["data_file"]  # with its Pair Coeffs, for MDAnalysis
    starts = [start_row(md_runs(frames, best, k, seed, temperature, args), seed, topology, r_max)
              for k, seed in enumerate(args.starts)]  # fmt: skip
    mapped = {pair: dict(zip(("r", "g"), peak(*rdf))) for pair, rdf in mapped_rdfs(args.cg, r_max).items()}
    names = ["-".join(map(str, p)) for p in itertools.combinations_with_replacement(frames.topology.table_names, 2)]
    result = {"cg": str(args.cg.resolve()), "fit": str(args.fit), "work": str(args.work), "sites": int(frames.topology.n_atoms),
              "temperature_K": temperature, "steps": args.steps, "timestep_fs": args.timestep,
              "picoseconds": args.steps * args.timestep / 1000, "model": {"family": "nequip", "channels": 8, "layers": 2,
              "cutoff": args.cutoff, "train_minutes": args.train_minutes},
              "residual": residual_record(resid, best), "site_pairs": dict(zip(mapped, names)),
              "mapped_rdf_peaks": mapped, "starts": starts}  # fmt: skip
    write_results(args.out, "cg_correction", [result])
    print(json.dumps({k: result[k] for k in ("residual", "mapped_rdf_peaks", "starts")}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
