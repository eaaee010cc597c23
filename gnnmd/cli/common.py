"""What several command modules share."""

from __future__ import annotations


def set_threads(threads: int | None) -> None:
    """torch CPU threads (None: torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
