"""Making what the library says reach the user: one rich handler on stderr for the ``decola_core``
loggers, a ``log.txt`` beside a run's outputs, and progress lines when stderr is no terminal.

The level is set once (``decola -v``/``-q`` or :func:`setup_logging`) and passed to worker
processes through ``DECOLA_LOG_LEVEL``, so spawned ranks log like the parent (ranks other than 0
only warnings).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

LOGGER = "decola_core"
LEVEL_ENV = "DECOLA_LOG_LEVEL"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class ConsoleHandler(logging.Handler):
    """Messages on stderr as plain lines, never wrapped (so commands and paths in them can be
    copied); warnings and errors are prefixed and coloured."""

    decola_console = True
    STYLES = {"WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red", "DEBUG": "dim"}

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            style = self.STYLES.get(record.levelname)
            if record.levelno != logging.INFO:
                text = f"{record.levelname.lower()}: {text}"
            self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _ProgressFilter(logging.Filter):
    """Progress lines go to the console only where no live progress bar shows them."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, "progress", False) and self.console.is_terminal)


def setup_logging(level: int | str | None = None, *, rank: int = 0) -> None:
    """Show the library's messages on stderr at ``level`` (default: ``DECOLA_LOG_LEVEL`` or
    INFO; WARNING on ranks other than 0). Idempotent: one handler however often it is called."""
    if level is None:
        level = os.environ.get(LEVEL_ENV, "INFO")
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    os.environ[LEVEL_ENV] = logging.getLevelName(level)
    logger = logging.getLogger(LOGGER)
    handler = next((h for h in logger.handlers if getattr(h, "decola_console", False)), None)
    if handler is None:
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        handler = ConsoleHandler(console)
        handler.addFilter(_ProgressFilter(console))
        logger.addHandler(handler)
    handler.setLevel(level if rank == 0 else max(level, logging.WARNING))
    logger.setLevel(min(level, logging.INFO))  # log files get INFO whatever the console shows
    logger.propagate = False


@contextlib.contextmanager
def log_file(folder: Path, enabled: bool = True) -> Iterator[Path | None]:
    """Also write every message of the library (progress lines included, at INFO and above)
    to ``folder/log.txt`` while the block runs (appended: a resumed run continues the file)."""
    if not enabled:
        yield None
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "log.txt"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger(LOGGER)
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:  # library use without setup_logging
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous)


class ProgressLog:
    """Periodic progress lines (``what: done/total, rate, ETA``) for logs and non-terminals: at
    most one every ``interval`` seconds, and the last one."""

    def __init__(self, what: str, unit: str, total: int | None = None, interval: float = 10.0):
        self.what, self.unit, self.total, self.interval = what, unit, total, interval
        self.start = self.last = time.perf_counter()
        self.done = 0
        self.log = logging.getLogger(f"{LOGGER}.progress")

    def update(self, done: int, extra: str = "", *, force: bool = False) -> None:
        self.done = done
        now = time.perf_counter()
        finished = self.total is not None and done >= self.total
        if not (force or finished or now - self.last >= self.interval):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        of = f"/{self.total:,}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0 and not finished:
            eta = f", ETA {_clock((self.total - done) / rate)}"
        tail = f" {extra}" if extra else ""
        self.log.info(
            "%s: %s%s %s%s, %.2f %s/s%s",
            self.what,
            f"{done:,}",
            of,
            self.unit,
            tail,
            rate,
            self.unit,
            eta,
            extra={"progress": True},
        )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
