"""The `gnnmd` command: one entry point, one module per command group (data, train, evaluate, md,
study). A command module parses its arguments, calls the library and prints; nothing else."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from gnnmd.cli import cg, data, evaluate, learn, md, study, train

    parser = argparse.ArgumentParser(prog="gnnmd", description="GNN force fields learned from LAMMPS MD")
    sub = parser.add_subparsers(dest="command", required=True)
    data.add_generate(sub)
    data.add_import(sub)
    cg.add_coarse_grain(sub)
    train.add_train(sub)
    train.add_finetune(sub)
    evaluate.add_evaluate(sub)
    train.add_walls(sub)
    md.add_md(sub)
    md.add_rdf(sub)
    learn.add_learn(sub)
    study.add_figures(sub)
    study.add_quickstart(sub)
    study.add_reproduce(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gnnmd.memory import keep_freed_memory

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    keep_freed_memory()  # large systems: reuse a step's memory instead of page-faulting it afresh
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as err:  # bad input, files, LAMMPS: one line, no traceback
        print(f"gnnmd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what was being written is cleaned up (or left whole) on the way out
        print(f"gnnmd {args.command}: interrupted", file=sys.stderr)
        return 130
