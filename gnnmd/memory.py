"""Keep a step's freed memory in the process for the next step to reuse, within bounds.

glibc hands every allocation above its mmap threshold (at most 32 MB by default) straight back to the
system when it is freed, so each force evaluation of a large system page-faults and zero-fills its big
tensors afresh. Measured on 2 CPU cores (benchmarks/scaling.py): the network at 17,496 atoms took 3x
longer per step that way. Telling glibc never to mmap and never to trim removed that cost but kept every
freed block and let the heap fragment, so the high-water mark grew (the network at 139,968 atoms:
22.7 GB instead of ~16).

So the bounds: blocks up to MMAP_THRESHOLD come from the heap and are reused step after step; larger ones
are mapped and returned when freed (their page faults are a small part of a step that allocates them);
free memory at the top of the heap beyond TRIM_THRESHOLD goes back to the system. The force call of MD
(ModelForces with the tabulated nequip) keeps its per-step blocks small, and with these bounds it runs
as fast as with memory never returned, at a peak close to glibc's defaults (139,968 atoms, 1 thread:
4.62 s and 11.4 kB/atom; never returned 4.64 s, 11.2 kB/atom; glibc's defaults 5.53 s, 10.7 kB/atom).
GNNMD_KEEP_FREED_MEMORY=0 leaves glibc's defaults."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20  # bytes: blocks up to this size are kept in the heap when freed
OLD_GLIBC_MMAP_THRESHOLD = 32 << 20  # for a glibc that refuses more (the limit mallopt(3) documents)
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept before glibc returns the rest

_done = [False]


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (the bounds above); False where it is not glibc or
    GNNMD_KEEP_FREED_MEMORY=0 (nothing changes there)."""
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
    # a fixed mmap threshold also stops glibc from moving it on its own as blocks are freed
    threshold = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(M_MMAP_THRESHOLD, OLD_GLIBC_MMAP_THRESHOLD)
    _done[0] = bool(threshold) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done[0]
