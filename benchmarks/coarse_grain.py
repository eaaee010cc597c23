"""Coarse-grained force matching end to end: map a dataset, fit an MS-CG force field (bonds, angles, pair
splines), run CG MD with it in plain LAMMPS, and compare with the mapped atomistic trajectory.

    python benchmarks/coarse_grain.py --data DATASET --mapping MAP.yaml --work DIR [--cutoff 7] [--steps 5000]

Any gnnmd dataset and mapping (water: 1 site per molecule at its centre of mass; ethane: 2 CH3 sites).
CG MD is NVT at the atomistic mean temperature (the segments' thermostat targets, else --temperature) in
the mean box of the mapped frames, from the first mapped frame. Writes benchmarks/results/coarse_grain.json:
the fit's residual, per site pair type the RDF first (highest) peak of the mapped atomistic frames and of
CG MD, and the speed of CG MD against atomistic MD (the dataset's force field, plain LAMMPS) in
molecule-steps per second on --threads threads."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from common import RESULTS, write_results

from gnnmd.analysis.rdf import compute_rdfs, peak
from gnnmd.data.coarse_grain import coarse_grain, load_cg_frames, write_cg_data
from gnnmd.data.forcefield import ForceField
from gnnmd.data.reader import read_manifest
from gnnmd.lammps.label import reference_force_field
from gnnmd.lammps.md_reference import run_lammps_md
from gnnmd.lammps.md_settings import MDSettings
from gnnmd.models.cg_fit import fit_cg, write_fit


def mapped_rdfs(cg: Path, r_max: float) -> dict:
    """Site-site g(r) of the mapped frames, averaged over segments weighted by their frame counts."""
    total, weights = {}, 0
    for segment in read_manifest(cg)["segments"]:
        rdfs = compute_rdfs(cg / segment["data_file"], cg / segment["dump_file"], r_max=r_max)
        n = sum(1 for line in open(cg / segment["dump_file"]) if line.startswith("ITEM: TIMESTEP"))
        for pair, (r, g) in rdfs.items():
            total[pair] = (r, total.get(pair, (r, 0.0))[1] + n * g)
        weights += n
    return {pair: (r, g / weights) for pair, (r, g) in total.items()}


def md_data_file(frames, path: Path) -> np.ndarray:
    """The first mapped frame scaled into the mean cell, as a data file for pair_style table; the cell."""
    cell = frames.mean_cell()
    fractional = frames.positions[0].astype(np.float64) @ np.linalg.inv(frames.cells[0].astype(np.float64))
    write_cg_data(frames.topology, fractional @ cell, cell, path, pair_coeffs=False)
    return cell


def molecule_speed(summary: dict, molecules: int) -> dict:
    return {"molecule_steps_per_second": summary["steps_per_second"] * molecules,
            "ns_per_day": summary["steps_per_second"] * summary["timestep_fs"] * 86400 * 1e-6,
            "timestep_fs": summary["timestep_fs"], "steps": summary["steps"], "seconds": summary["seconds"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the atomistic gnnmd dataset")
    parser.add_argument("--mapping", type=Path, required=True, help="the mapping YAML")
    parser.add_argument("--work", type=Path, required=True, help="folder for the CG dataset, fit and MD runs")
    parser.add_argument("--cutoff", type=float, default=7.0)
    parser.add_argument("--spacing", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=5000, help="CG MD steps")
    parser.add_argument("--atomistic-steps", type=int, default=500, help="atomistic MD steps (speed only)")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs, both runs")
    parser.add_argument("--temperature", type=float, help="K (default: the dataset's mean thermostat target)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "coarse_grain.json")
    args = parser.parse_args()
    work, manifest = args.work, read_manifest(args.data)
    targets = [s["temperature"] for s in manifest["segments"] if isinstance(s.get("temperature"), (int, float))]
    temperature = args.temperature or (float(np.mean(targets)) if targets else 300.0)
    cg_manifest = coarse_grain(args.data, args.mapping, work / "cg", overwrite=True)
    frames = load_cg_frames(work / "cg")
    fit = fit_cg(frames, cutoff=args.cutoff, spacing=args.spacing)
    record = write_fit(fit, frames, work / "fit", overwrite=True, source={"dataset": str(work / "cg")})
    cell = md_data_file(frames, work / "md.data")
    cg_settings = MDSettings(args.steps, timestep=args.timestep, ensemble="nvt", temperature=temperature,
                             dump_every=max(1, args.steps // 200))  # fmt: skip
    cg_md = run_lammps_md(work / "md.data", ForceField.read(work / "fit" / "cg.ff"), cg_settings, work / "cg_md",
                          threads=args.threads, overwrite=True)  # fmt: skip
    atomistic_settings = MDSettings(
        args.atomistic_steps, timestep=args.timestep, ensemble="nvt", temperature=temperature
    )
    atomistic = run_lammps_md(args.data / manifest["segments"][0]["data_file"], reference_force_field(args.data),
                              atomistic_settings, work / "atomistic_md", threads=args.threads, overwrite=True)  # fmt: skip
    r_max = min(10.0, 0.49 * float(np.min(np.diag(cell))))
    reference = mapped_rdfs(work / "cg", r_max)
    trajectory = compute_rdfs(work / "cg" / cg_manifest["segments"][0]["data_file"],
                              work / "cg_md" / "trajectory.lammpstrj", r_max=r_max, skip=50)  # fmt: skip
    molecules = len(np.unique(frames.topology.molecules))
    rows, names = [], list(itertools.combinations_with_replacement(frames.topology.table_names, 2))
    for pair, sites in zip(reference, names):
        (r_ref, g_ref), (r_md, g_md) = peak(*reference[pair]), peak(*trajectory[pair])
        rows.append({"pair": "-".join(map(str, sites)), "mapped_peak_r": r_ref, "mapped_peak_g": g_ref, "cg_md_peak_r": r_md,
                     "cg_md_peak_g": g_md})  # fmt: skip
    write_results(
        args.out, "coarse_grain", rows, threads=args.threads, data=str(args.data), mapping=str(args.mapping),
        data_protocol=manifest.get("protocol"),
        molecules=molecules, sites=int(frames.topology.n_atoms), frames=len(frames), temperature_K=temperature,
        fit={k: record[k] for k in ("cutoff", "spacing", "ridge", "rms_mapped_force", "rms_residual_force",
                                    "relative_residual", "rms_force_per_term", "bonds", "angles")},
        cg_md={"failed_at_step": cg_md["failed_at_step"], "mean_temperature": cg_md["mean_temperature"],
               "energy_drift_per_atom_per_ps": cg_md["energy_drift_per_atom_per_ps"],
               "rdf_frames_skipped": 50, **molecule_speed(cg_md, molecules)},
        atomistic_md={"failed_at_step": atomistic["failed_at_step"], **molecule_speed(atomistic, molecules)},
        speedup_molecule_steps=cg_md["steps_per_second"] / atomistic["steps_per_second"],
    )  # fmt: skip
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
