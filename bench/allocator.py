"""Keep freed memory inside the process, so that large tensors do not page-fault on every use.

A simulation allocates and frees tensors of several MiB for every chunk of time steps. glibc's
malloc serves such blocks with fresh `mmap`s or returns them to the system when the top of the
heap is freed, and the next allocation then pays a page fault per 4 KiB page: on the 2-core
development machine, thousands of faults per simulated step. `python -m bench.speed` measured the
curve to T=1000 at 1.26 ANN forwards per step with the system allocator
(results/perf_system_allocator.md) and 1.16 with this setting and the longer chunks it allows
(results/perf.md). `keep_freed_memory()` serves every block from the heap and never trims it. The price is memory: the resident size stays at its peak, and the
heap keeps some holes that aligned blocks leave. For cifar_resnet8 at batch 64 the peak resident
size went from 652 to 820 MiB over a curve, stayed at about 1.2 GiB for training steps at T=4, and
went from 1.9 to 2.3 GiB at T=16.

The command-line entry points call it once at start; set SPIKEBENCH_KEEP_MEMORY=0 to leave the
allocator alone. It does nothing outside glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can express

_kept = False


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and keep freed memory (glibc); True if it took effect."""
    global _kept
    if os.environ.get("SPIKEBENCH_KEEP_MEMORY", "1") == "0" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    _kept = _kept or (bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)))
    return _kept


def freed_memory_kept() -> bool:
    """Whether `keep_freed_memory()` took effect in this process."""
    return _kept
