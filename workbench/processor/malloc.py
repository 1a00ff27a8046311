"""Keep a long-running processor's resident memory near what it uses, and measure it.

glibc's allocator raises its mmap threshold each time a large block is freed, so after the
first few batches, batch-sized arrays come from the heap, and a heap fragmented by them is
seldom given back: a processor's resident memory then grows with the largest batches it
ever saw (~40 MB at 5,000 machines). A fixed threshold keeps such arrays in mappings of
their own, returned to the system when freed. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, kept fixed


def fix_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; True if set.

    >>> isinstance(fix_mmap_threshold(), bool)
    True
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to fix
        log.debug("mallopt is not available: the allocator keeps its own policy")
        return False


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB). Linux's VmHWM belongs to the program since
    it started; ``ru_maxrss`` would also count what the parent that forked it held then."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
