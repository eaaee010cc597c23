"""`gnnmd figures`, `gnnmd quickstart` and `gnnmd reproduce`: the study's figures and runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gnnmd.cli.common import add_device, positive_int


def add_figures(sub) -> None:
    p = sub.add_parser(
        "figures",
        help="loss curves and learned pair interactions of a training run",
        description="The study's figures for a run directory: loss curves (Fig. 2) and two-particle probes of "
        "the best model against the force field (Figs. 3, 4).",
    )
    p.add_argument("--run", type=Path, required=True, help="run directory (has metrics.csv and best.pt)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/figures"))
    p.set_defaults(func=run_figures_command)


def run_figures_command(args) -> int:
    from gnnmd.analysis.figures import run_figures

    for path in run_figures(args.run, args.out):
        print(f"wrote {path}")
    return 0


def add_quickstart(sub) -> None:
    p = sub.add_parser(
        "quickstart",
        help="the whole job on a small default: generate water with LAMMPS, train, evaluate, figures",
        description="Runs `gnnmd generate water`, `gnnmd train`, `gnnmd evaluate` (validation split) and "
        "`gnnmd figures` into one folder: a few minutes on 2 CPU cores with the defaults.",
    )
    p.add_argument("--out", type=Path, default=Path("quickstart"), help="folder for data/, runs/ and figures/")
    p.add_argument("--model", default="eqforce", help="model family (mpnn, eqforce, nequip)")
    p.add_argument("--molecules", type=int, default=64)
    p.add_argument("--frames", type=int, default=60, help="frames in all, over 6 segments")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart in --out")
    p.set_defaults(func=run_quickstart)


def run_quickstart(args) -> int:
    """Each step is the public command, run as its own process, so the quickstart is exactly what a user
    would type."""
    data, runs, name = args.out / "data" / "water", args.out / "runs", f"{args.model}-quickstart"
    overwrite = ["--overwrite"] if args.overwrite else []
    steps = [
        ["generate", "water", "--out", str(data), "--molecules", str(args.molecules), "--frames", str(args.frames),
         "--segments", "6", "--equil-steps", "2000", "--stride", "20", *overwrite],
        ["train", "--model", args.model, "--data", str(data), "--name", name, "--runs-dir", str(runs),
         "--epochs", str(args.epochs), "--warmup", "1", "--batch-size", "2", "--lr", "0.003", *overwrite],
        ["evaluate", "--model", str(runs / name / "best.pt"), "--data", str(data), "--split", "val",
         "--out", str(runs / name / "eval-water-val.json")],
        ["figures", "--run", str(runs / name), "--out", str(args.out / "figures")],
    ]  # fmt: skip
    for step in steps:
        print(f"\n$ gnnmd {' '.join(step)}", flush=True)
        code = subprocess.call([sys.executable, "-m", "gnnmd.cli", *step])
        if code:
            return code
    return 0


def add_reproduce(sub) -> None:
    from gnnmd.study.scales import SCALES

    p = sub.add_parser(
        "reproduce",
        help="the reference study end to end: data, training, zero-shot, fine-tuning, table and figures",
        description="Generate the four datasets with LAMMPS, train every model family on water, evaluate on water, "
        "big water and zero-shot argon, fine-tune on argon (several frame counts, encoders frozen or not), train "
        "from-scratch argon controls, and write "
        "reproduction.json, reproduction.md and figures. Resumable: rerun the same command after a stop. Scales: "
        + "; ".join(f"{name}: {scale.description}" for name, scale in SCALES.items()),
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="default")
    p.add_argument("--work", type=Path, default=Path("reproduce"), help="folder for data/, runs/, evals/, logs/")
    p.add_argument("--results", type=Path, help="where the JSON, table and figures go (default: WORK/results)")
    p.add_argument(
        "--jobs", type=positive_int, help="trainings side by side, one torch thread each (default: the scale's)"
    )
    p.add_argument(
        "--families",
        nargs="+",
        metavar="FAMILY",
        help="only these model families' runs (e.g. csnequip); rows of the others already in --results are kept",
    )
    add_device(p)
    p.add_argument(
        "--update-doc",
        type=Path,
        metavar="FILE",
        help="also put the table between FILE's reproduction-table markers (e.g. docs/reproduction.md)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_reproduce)


def run_reproduce(args) -> int:
    from gnnmd.study.reproduction import Reproduction, doc_table_block, update_doc

    if args.update_doc:
        doc_table_block(args.update_doc)  # a file without the block is refused before hours of work
    results = args.results or args.work / "results"
    report = Reproduction(
        args.scale, args.work, results, args.jobs, not args.no_progress, args.device, args.families
    ).run()
    table = (results / "reproduction.md").read_text()
    if args.update_doc:
        update_doc(args.update_doc, table)
    print(table)
    print(f"{len(report['rows'])} rows in {results / 'reproduction.json'}; figures in {results / 'figures'}")
    return 0
