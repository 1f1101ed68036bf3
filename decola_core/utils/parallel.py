"""Forked worker processes for CPU-bound steps over large in-memory data (JSON parsing and
formatting), which the workers read copy-on-write instead of receiving it pickled."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from decola_core.errors import DecolaError

_TASK: tuple[Callable[[Any, Any], Any], Any] | None = None  # what forked workers call


def fork_workers(amount: int, minimum: int) -> int:
    """How many processes to use for ``amount`` of work (1: this process only).

    Forking pays off from ``minimum`` on, needs Linux (elsewhere it is unsafe or slow), and is
    skipped beside live threads, whose locks a forked child could inherit held.
    """
    if amount < minimum or sys.platform != "linux" or threading.active_count() > 1:
        return 1
    return min(len(os.sched_getaffinity(0)), 8)


def fork_map(
    function: Callable[[Any, Any], Any], shared: Any, items: Iterable[Any], workers: int
) -> list[Any]:
    """``[function(shared, item) for item in items]``, computed by ``workers`` forked processes.

    Items are handed out one at a time and in order; results come back in order. ``shared`` is
    inherited by the workers, never pickled. A worker that dies (killed for memory, say) is a
    clear error, never a hang.
    """
    # the process-pool machinery costs tens of ms to import: only here, where it is used
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    global _TASK
    _TASK = (function, shared)
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            return list(pool.map(_call, items))
    except BrokenProcessPool:
        raise DecolaError(
            "a worker process died (out of memory?); free memory or run on fewer cores"
        ) from None
    finally:
        _TASK = None


def _call(item: Any) -> Any:
    assert _TASK is not None
    function, shared = _TASK
    return function(shared, item)
