"""Keep freed memory inside the process on CPU, so training steps stop paying for page faults.

A training step frees and re-allocates the same large activations every step. glibc's malloc
serves blocks above its mmap threshold (at most 32 MB, e.g. a (64, 300, 1024) float32
activation is 79 MB) with a fresh ``mmap`` and returns them to the kernel on ``free``; every
reuse then faults in and zeroes each 4 KiB page again. Measured on a slot-3 step at the report's
sizes (2 cores): ~500,000 page faults and 0.7-1.6 s of system time per step, against ~0.1 s
with the settings below (``bench/train_step.py`` shows the step time with and without them).

``keep_freed_memory`` asks glibc (via ``mallopt``) to serve every block from its heap and never
give the heap's top back, so freed activations are reused by the next step. The peak resident
memory stays the high-water mark of the step. It changes speed only, never results. On other C
libraries (macOS, musl) it does nothing and says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

TOP_PAD_BYTES = 64 << 20  # grow the heap in 64 MB steps: fewer brk calls for large activations


def keep_freed_memory() -> bool:
    """Switch glibc malloc to keep freed blocks for reuse; True if it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; all three must hold, or large blocks would still be unmapped
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, TOP_PAD_BYTES))
    return all(mallopt(param, value) == 1 for param, value in settings)
