"""Safe file output: write to a temporary file in the same folder, then rename into place."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from decola_core.errors import DecolaError
from decola_core.utils.memory import gc_paused


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", *, protect: tuple[Path, ...] = ()
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    If the block raises, the temporary file is removed and ``path`` is left untouched. A
    folder that cannot be created or written, or a full disk, is a one-line
    :class:`DecolaError` naming ``path``. ``protect`` lists input files that must never be
    overwritten.
    """
    path = Path(path)
    for guarded in protect:
        if path.resolve() == Path(guarded).resolve():
            raise DecolaError(f"refusing to overwrite the input file {path}; choose another output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise DecolaError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise DecolaError(
                f"cannot write {path}: {err.strerror}; nothing was changed there"
            ) from None
        raise


def atomic_write_text(path: str | Path, text: str, *, protect: tuple[Path, ...] = ()) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", protect=protect) as handle:
        handle.write(text)


def read_json_file(path: str | Path, what: str = "annotation file"):
    """Parse a JSON file with orjson; missing or invalid files are one-line DecolaErrors."""
    import orjson

    path = Path(path)
    try:
        with gc_paused():
            return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise DecolaError(f"{what} not found: {path}") from None
    except orjson.JSONDecodeError as err:
        raise DecolaError(f"{path}: invalid JSON ({err})") from None
