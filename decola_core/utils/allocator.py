"""Keep freed memory in the process instead of handing it back to the OS (glibc malloc).

On the CPU a detection model allocates and frees tensors of hundreds of MB in every step.
glibc serves each such block from a fresh ``mmap`` and unmaps it when freed, so every step
pays page faults on memory it has just given back; the deformable-attention temporaries make
this a third of a training step. Serving everything from the heap and keeping what is freed
(up to 1 GiB at its top) removes that, at the cost of a higher resident size between steps.
``DECOLA_MALLOC=system`` leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

ENV = "DECOLA_MALLOC"
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_BYTES = 1 << 30
_applied = False


def retain_freed_memory() -> bool:
    """Tune glibc malloc as described above, once per process; whether it is in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV, "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _applied = bool(
            libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
        )
    except (OSError, AttributeError):  # not glibc
        return False
    if _applied:
        log.debug("malloc keeps freed memory (%s=system to turn off)", ENV)
    return _applied
