"""Zero-shot transfer (issue: zero-shot transfer by corresponding states): a water-trained model's force
errors on its own validation frames and on argon, which it never saw, into
benchmarks/results/zero_shot.json; with --range, also where the transfer holds and where it breaks: the
shipped corresponding-states model on Lennard-Jones liquids made by LAMMPS across sigma, epsilon, reduced
temperature, mixtures and charges (rows "range", figure zero_shot_range.png). (Two of those liquids are a
pass/fail test: tests/test_zero_shot.py.)

    python benchmarks/zero_shot.py --water DATA --argon DATA [--models CKPT ...] [--range --work DIR]"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, SHIPPED_MODELS, evaluation, write_results

from gnnmd.lammps.liquids import fcc_lattice, lennard_jones_liquid, reduced_temperature_to_kelvin

MODELS = [SHIPPED_MODELS / "csnequip-pme-water" / "best.pt", SHIPPED_MODELS / "nequip-pme-water" / "best.pt"]
# (name, species as (eps, sigma[, charge]), reduced temperature kT/eps of the first species, reduced density
# rho sigma^3 with the species' mean sigma, LJ cutoff in A). Water's O-O: eps 0.155, sigma 3.165, cut 10 A
# = 3.16 sigma; argon's: 0.2378, 3.405 (10 A = 2.94 sigma).
RANGE = [
    *[(f"sigma {sigma:g}", [(0.3, sigma)], 0.75, 0.84, 10.0) for sigma in (2.5, 3.0, 3.4, 4.0, 4.5)],
    *[(f"eps {eps:g}", [(eps, 3.4)], 0.75, 0.84, 10.0) for eps in (0.05, 1.0, 3.0)],
    *[(f"T* {t:g}", [(0.3, 3.4)], t, 0.84, 10.0) for t in (1.5, 3.0, 6.0, 12.0, 30.0, 60.0)],
    *[(f"rho* {rho:g}, T* 1.5", [(0.3, 3.4)], 1.5, rho, 10.0) for rho in (1.0, 1.15)],
    *[(f"cutoff {cut / 3.4:.2g} sigma", [(0.3, 3.4)], 0.75, 0.84, cut) for cut in (8.5, 13.6)],
    ("mixture sigma 3.0/3.6", [(0.3, 3.0), (0.2, 3.6)], 0.75, 0.84, 10.0),
    ("mixture sigma 2.8/4.2", [(0.3, 2.8), (0.3, 4.2)], 0.75, 0.84, 10.0),
    *[(f"charged +-{q:g} (sigma 3.0/3.6)", [(0.3, 3.0, q), (0.2, 3.6, -q)], 1.0, 0.84, 10.0) for q in (0.3, 0.8, 1.5)],
]


def evaluate(model: Path, data: Path, split: str) -> dict:
    command, result = evaluation(
        ["--model", str(model), "--data", str(data), "--split", split, "--allow-unknown-types"]
    )
    return {"command": command, "family": result["family"], "force_mae": result["force_mae"],
            "mean_abs_force": result["mean_abs_force"], "relative_force_mae": result["relative_force_mae"],
            "frames": result["frames"]}  # fmt: skip


def shortest_reduced_distance(dataset: Path) -> float:
    """The shortest r / sigma_ij of the liquid's pairs (water's training pairs reached down to 0.764)."""
    from gnnmd.data.frames_cache import load_frames
    from gnnmd.models import states

    return states.shortest_reduced_distance(load_frames(dataset), pair_cutoff=3.2)


def range_rows(model: Path, work: Path) -> list[dict]:
    """The model zero-shot on each liquid of RANGE (made once per work folder, then reused)."""
    from gnnmd.cli import main as gnnmd

    rows = []
    for name, species, reduced_t, reduced_density, cutoff in RANGE:
        folder = work / name.replace(" ", "_").replace("/", "-").replace("*", "")
        temperature = reduced_temperature_to_kelvin(reduced_t, species[0][0])
        if not (folder / "dataset" / "manifest.json").exists():
            lattice = fcc_lattice(sum(s[1] for s in species) / len(species), reduced_density)
            data_file, dump = lennard_jones_liquid(folder / "lammps", species, temperature, lattice, cutoff=cutoff)
            argv = ["import", "--data", str(data_file), "--dump", str(dump), "--out", str(folder / "dataset")]
            if gnnmd(argv) != 0:
                raise SystemExit(f"gnnmd {' '.join(argv)} failed")
        row = evaluate(model, folder / "dataset", "all")
        rows.append({"what": "range", "liquid": name, "species": species, "reduced_temperature": reduced_t,
                     "reduced_density": reduced_density, "temperature": temperature, "lj_cutoff": cutoff,
                     "shortest_reduced_distance": shortest_reduced_distance(folder / "dataset"), **row})  # fmt: skip
        print(
            f"{name}: force MAE {row['force_mae']:.4f} = {row['relative_force_mae']:.1%} of mean |F|, "
            f"shortest r/sigma {rows[-1]['shortest_reduced_distance']:.3f}"
        )
    return rows


def plot_range(rows: list[dict], path: Path) -> None:
    from gnnmd.analysis.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = [r["liquid"] for r in rows]
    ax.bar(range(len(rows)), [100 * r["relative_force_mae"] for r in rows], color="C0")
    ax.axhline(15, color="C3", ls="--", lw=0.8, label="the test's bound, 15%")
    ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="force MAE / mean |F| (%)", yscale="log", title="water-trained csnequip, zero-shot on LJ liquids")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--water", type=Path, required=True, help="the water dataset the models were trained on")
    parser.add_argument("--argon", type=Path, required=True)
    parser.add_argument("--models", type=Path, nargs="+", default=MODELS)
    parser.add_argument("--range", action="store_true", help="also the liquids of RANGE, with the first model")
    parser.add_argument("--work", type=Path, default=Path("zero_shot_range"), help="where --range's liquids go")
    args = parser.parse_args()
    rows = []
    for model in args.models:
        rows.append({"what": "water validation", **evaluate(model, args.water, "val")})
        rows.append({"what": "argon zero-shot (trained on water only)", **evaluate(model, args.argon, "all")})
    if args.range:
        rows += range_rows(args.models[0], args.work)
        plot_range([r for r in rows if r["what"] == "range"], RESULTS / "zero_shot_range.png")
    write_results(RESULTS / "zero_shot.json", "zero_shot", rows, threads=1)


if __name__ == "__main__":
    main()
