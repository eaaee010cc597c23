"""Keep freed memory in the process for the next step to reuse.

glibc hands every allocation above its mmap threshold (at most 32 MB) straight back to the system when it
is freed, so each force evaluation of a large system page-faults and zero-fills its gigabytes of tensors
afresh. Measured on 2 CPU cores (benchmarks/scaling.py): nequip at 17,496 atoms took 3x longer per step
that way, and time per atom grew with the system instead of staying flat. Telling glibc to serve large
blocks from its heap and never to trim it keeps a step's peak memory mapped for the next, the way
PyTorch's CUDA caching allocator does on a GPU (jemalloc or tcmalloc via LD_PRELOAD do the same).

The price is memory: freed blocks stay mapped and the heap fragments, so a step's high-water mark is
higher (nequip at 139,968 atoms: 22.7 GB instead of ~16). GNNMD_KEEP_FREED_MEMORY=0 turns it off for
systems that only just fit."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_done = [False]


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; False where it is not glibc (nothing changes there)."""
    if _done[0]:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("GNNMD_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc only (musl has none)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # -1 reads as SIZE_MAX in glibc: never trim the heap top
    _done[0] = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
    return _done[0]
