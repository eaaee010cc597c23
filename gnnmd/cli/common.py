"""What several command modules share."""

from __future__ import annotations

import argparse


def set_threads(threads: int | None) -> None:
    """torch CPU threads (None: torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def add_device(parser) -> None:
    """--device, as every command that computes with a model takes it."""
    from gnnmd.devices import DEVICE_HELP

    parser.add_argument("--device", default="auto", help=f"where to compute: {DEVICE_HELP}")


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1 (--jobs): 0 would run nothing, or fall back unsaid."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
