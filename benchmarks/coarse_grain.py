"""Coarse-grained force matching end to end: map a dataset, fit an MS-CG force field (bonds, angles, pair
splines), run CG MD with it in plain LAMMPS, and compare with the mapped atomistic trajectory.

    python benchmarks/coarse_grain.py --data DATASET --mapping MAP.yaml --work DIR [--cutoff 7] [--steps 5000]

Any gnnmd dataset and mapping (water: 1 site per molecule at its centre of mass; ethane: 2 CH3 sites).
CG MD is NVT at the atomistic mean temperature (the segments' thermostat targets, else --temperature) in
the mean box of the mapped frames. Writes benchmarks/results/coarse_grain.json:
the fit's residual, per site pair type the RDF first (highest) peak of the mapped atomistic frames and of
CG MD, and the speed of CG MD against atomistic MD (the dataset's force field, plain LAMMPS) in
molecule-steps per second on --threads threads.

CG MD runs from several starts (--starts: velocity seeds, each from another mapped frame); for a mapping with
CG bonds the seed's check (chemtrain's ethane example) compares the joint fit's bonds with the projected-force
least squares. The results file keeps one row per case (--label, default the mapping's name), so water and
ethane runs add up:

    python benchmarks/coarse_grain.py --data water --mapping benchmarks/water_com.yaml --work w --cutoff 7
    python benchmarks/coarse_grain.py --data ethane --mapping benchmarks/ethane_com.yaml --work e1 --cutoff 9
    python benchmarks/coarse_grain.py --data ethane --mapping benchmarks/ethane_2site.yaml --work e2 --cutoff 9 \\
        --timestep 1 --steps 20000"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, write_results

from gnnmd.analysis.rdf import bond_lengths, compute_rdfs, peak
from gnnmd.data.coarse_grain import coarse_grain, load_cg_frames, write_cg_data
from gnnmd.data.forcefield import ForceField
from gnnmd.data.reader import read_manifest
from gnnmd.lammps.label import reference_force_field
from gnnmd.lammps.md_reference import run_lammps_md
from gnnmd.lammps.md_settings import MDSettings
from gnnmd.models.cg_fit import bond_parameters, fit_cg, projected_bond_fit, write_fit


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


def md_data_file(frames, index: int, path: Path) -> np.ndarray:
    """Mapped frame `index` scaled into the mean cell, as a data file for pair_style table; the cell."""
    cell = frames.mean_cell()
    fractional = frames.positions[index].astype(np.float64) @ np.linalg.inv(frames.cells[index].astype(np.float64))
    write_cg_data(frames.topology, fractional @ cell, cell, path, pair_coeffs=False)
    return cell


def seed_check(frames, fit) -> list[dict]:
    """The seed's check per CG bond type: the joint fit's K and r0 against the projected-force least squares
    (also in the seed's units, nm and kJ/mol/nm^2 for k = 2K)."""
    rows = []
    for joint, alone in zip(bond_parameters(fit), projected_bond_fit(frames)):
        rows.append({"types": joint["types"], "fit_K": joint["K"], "fit_r0": joint["r0"],
                     "least_squares_K": alone["K"], "least_squares_r0": alone["r0"], "samples": alone["samples"],
                     "r0_relative_difference": joint["r0"] / alone["r0"] - 1,
                     "K_relative_difference": joint["K"] / alone["K"] - 1,
                     "fit_kb_kJ_mol_nm2": 2 * joint["K"] * 4.184 * 100, "fit_b0_nm": joint["r0"] / 10,
                     "least_squares_kb_kJ_mol_nm2": 2 * alone["K"] * 4.184 * 100,
                     "least_squares_b0_nm": alone["r0"] / 10})  # fmt: skip
    return rows


def molecule_speed(summary: dict, molecules: int) -> dict:
    return {"molecule_steps_per_second": summary["steps_per_second"] * molecules,
            "ns_per_day": summary["steps_per_second"] * summary["timestep_fs"] * 86400 * 1e-6,
            "timestep_fs": summary["timestep_fs"], "steps": summary["steps"], "seconds": summary["seconds"]}  # fmt: skip


def mapped_bonds(frames) -> np.ndarray:
    """Every CG bond length of the mapped frames (minimum image)."""
    from MDAnalysis.lib.distances import calc_bonds
    from MDAnalysis.lib.mdamath import triclinic_box

    bonds = np.asarray(frames.topology.bonds).reshape(-1, 2)
    if not len(bonds):
        return np.zeros(0)
    return np.concatenate([calc_bonds(p[bonds[:, 0]].astype(np.float64), p[bonds[:, 1]].astype(np.float64),
                                      box=triclinic_box(*c.astype(np.float64)))
                           for p, c in zip(frames.positions, frames.cells)])  # fmt: skip


def distribution(values: np.ndarray) -> dict | None:
    return {"mean": float(values.mean()), "std": float(values.std())} if len(values) else None


def cg_md_run(frames, fit_ff: Path, start: int, seed: int, args, temperature: float, work: Path) -> dict:
    """CG MD (NVT) from mapped frame `start` with velocities drawn with `seed`, then its site-site RDF peaks."""
    out = work / f"cg_md_s{seed}"
    cell = md_data_file(frames, start, work / f"md_s{seed}.data")
    settings = MDSettings(args.steps, timestep=args.timestep, ensemble="nvt", temperature=temperature, seed=seed,
                          dump_every=max(1, args.steps // 200))  # fmt: skip
    summary = run_lammps_md(work / f"md_s{seed}.data", ForceField.read(fit_ff), settings, out, threads=args.threads,
                            overwrite=True)  # fmt: skip
    run = {"seed": seed, "start_frame": start, "failed_at_step": summary["failed_at_step"],
           "mean_temperature": summary["mean_temperature"],
           "energy_drift_per_atom_per_ps": summary["energy_drift_per_atom_per_ps"], "summary": summary}  # fmt: skip
    if summary["failed_at_step"] is None:
        r_max = min(10.0, 0.49 * float(np.min(np.diag(cell))))
        topology = work / "cg" / read_manifest(work / "cg")["segments"][0]["data_file"]  # with its Pair Coeffs
        run["rdfs"] = compute_rdfs(topology, out / "trajectory.lammpstrj", r_max=r_max, skip=50)
        run["bonds"] = distribution(bond_lengths(topology, out / "trajectory.lammpstrj", skip=50))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the atomistic gnnmd dataset")
    parser.add_argument("--mapping", type=Path, required=True, help="the mapping YAML")
    parser.add_argument("--work", type=Path, required=True, help="folder for the CG dataset, fit and MD runs")
    parser.add_argument("--label", help="this case's key in the results file (default: the mapping's name)")
    parser.add_argument("--cutoff", type=float, default=7.0)
    parser.add_argument("--spacing", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=10000, help="CG MD steps per start")
    parser.add_argument("--starts", type=int, nargs="+", default=[1, 2, 3],
                        help="velocity seeds; start k begins from mapped frame (k-1) * frames / starts")  # fmt: skip
    parser.add_argument("--atomistic-steps", type=int, default=500, help="atomistic MD steps (speed only)")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs, both runs")
    parser.add_argument("--temperature", type=float, help="K (default: the dataset's mean thermostat target)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "coarse_grain.json")
    args = parser.parse_args()
    work, manifest, label = args.work, read_manifest(args.data), args.label or args.mapping.stem
    targets = [s["temperature"] for s in manifest["segments"] if isinstance(s.get("temperature"), (int, float))]
    temperature = args.temperature or (float(np.mean(targets)) if targets else 300.0)
    coarse_grain(args.data, args.mapping, work / "cg", overwrite=True)
    frames = load_cg_frames(work / "cg")
    fit = fit_cg(frames, cutoff=args.cutoff, spacing=args.spacing)
    record = write_fit(fit, frames, work / "fit", overwrite=True, source={"dataset": str(work / "cg")})
    runs = [cg_md_run(frames, work / "fit" / "cg.ff", (k * len(frames)) // len(args.starts), seed, args, temperature,
                      work) for k, seed in enumerate(args.starts)]  # fmt: skip
    atomistic_settings = MDSettings(
        args.atomistic_steps, timestep=args.timestep, ensemble="nvt", temperature=temperature
    )
    atomistic = run_lammps_md(args.data / manifest["segments"][0]["data_file"], reference_force_field(args.data),
                              atomistic_settings, work / "atomistic_md", threads=args.threads, overwrite=True)  # fmt: skip
    r_max = min(10.0, 0.49 * float(np.min(np.diag(frames.mean_cell()))))
    reference = mapped_rdfs(work / "cg", r_max)
    molecules = len(np.unique(frames.topology.molecules))
    rows, names = [], list(itertools.combinations_with_replacement(frames.topology.table_names, 2))
    for pair, sites in zip(reference, names):
        r_ref, g_ref = peak(*reference[pair])
        row = {"pair": "-".join(map(str, sites)), "mapped_peak_r": r_ref, "mapped_peak_g": g_ref, "starts": []}
        for run in runs:
            r_md, g_md = peak(*run["rdfs"][pair]) if "rdfs" in run else (None, None)
            row["starts"].append({"seed": run["seed"], "cg_md_peak_r": r_md, "cg_md_peak_g": g_md})
        done = [s for s in row["starts"] if s["cg_md_peak_r"] is not None]
        if done:
            row["worst_peak_r_difference"] = max(abs(s["cg_md_peak_r"] - r_ref) for s in done)
            row["worst_peak_g_relative_difference"] = max(abs(s["cg_md_peak_g"] / g_ref - 1) for s in done)
        rows.append(row)
    speed = float(np.mean([run["summary"]["steps_per_second"] for run in runs]))
    case = {
        "command": " ".join(["python", *sys.argv]), "threads": args.threads, "data": str(args.data),
        "mapping": str(args.mapping), "data_protocol": manifest.get("protocol"), "molecules": molecules,
        "sites": int(frames.topology.n_atoms), "frames": len(frames), "temperature_K": temperature,
        "fit": {k: record[k] for k in ("cutoff", "spacing", "ridge", "rms_mapped_force", "rms_residual_force",
                                       "relative_residual", "rms_force_per_term", "bonds", "angles")},
        "seed_check": seed_check(frames, fit),
        "mapped_bond_lengths": distribution(mapped_bonds(frames)),
        "cg_md": [{**{k: v for k, v in run.items() if k not in ("summary", "rdfs")},
                   "picoseconds": args.steps * args.timestep / 1000, "rdf_frames_skipped": 50,
                   **molecule_speed(run["summary"], molecules)} for run in runs],
        "atomistic_md": {"failed_at_step": atomistic["failed_at_step"], **molecule_speed(atomistic, molecules)},
        "speedup_molecule_steps": speed / atomistic["steps_per_second"],
        "rdf_peaks": rows,
    }  # fmt: skip
    earlier = json.loads(args.out.read_text()).get("rows", []) if args.out.exists() else []
    cases = {row["case"]: row for row in earlier if "case" in row}  # one row per case; others' rows are kept
    cases[label] = {"case": label, **case}
    write_results(args.out, "coarse_grain", [cases[k] for k in sorted(cases)])
    print(json.dumps({"case": label, "seed_check": case["seed_check"], "rdf_peaks": rows}, indent=1))


if __name__ == "__main__":
    main()
