"""Memory-related helpers."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block (usable as a decorator).

    Parsing or building millions of small acyclic objects (JSON records) otherwise triggers
    collections that each traverse every object alive, which made the pseudo-label chain spend
    over half its time in the collector. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
