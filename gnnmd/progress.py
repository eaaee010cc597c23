"""Progress bars only where a person watches: tqdm's `disable=None` hides a bar when the output is not a
terminal (a log file, CI), so logs hold the per-epoch lines and summaries, not carriage-return noise."""

from __future__ import annotations


def hidden(progress: bool) -> bool | None:
    """tqdm's `disable` for a bar the caller wants (`progress`): shown on a terminal only."""
    return None if progress else True
