"""Resumable, verified downloads of zoo artefacts into a store folder (the cache by default).

A download goes to ``<file>.part``; an interrupted one resumes with an HTTP Range request (and
restarts cleanly when the server ignores Range). Transient failures are retried with exponential
backoff. The SHA-256 is computed while the bytes arrive and checked against the registry, or,
for artefacts without a published checksum, against the lock file written on the first download
(trust on first use). Only a verified file is renamed into place.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from decola_core import __version__
from decola_core.utils.io import atomic_write_text
from decola_core.zoo.registry import Artifact, ZooError

log = logging.getLogger(__name__)

LOCK_FILE = "zoo-lock.json"
CHUNK_BYTES = 1 << 20
RETRY_HTTP_CODES = {408, 425, 429, 500, 502, 503, 504}


class TransientError(Exception):
    """A failure worth retrying (connection dropped, timeout, 5xx)."""


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one cached file."""

    name: str
    status: str  # ok | pinned | missing | mismatch
    path: Path
    expected: str | None = None
    actual: str | None = None


def sha256_file(path: Path, chunk: int = CHUNK_BYTES) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class LockFile:
    """``zoo-lock.json`` in a store: SHA-256 of artefacts without a published checksum."""

    def __init__(self, store: Path) -> None:
        self.path = store / LOCK_FILE

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ZooError(
                f"{self.path}: unreadable lock file ({err}); delete it to re-pin"
            ) from None
        return data.get("artifacts", {})

    def sha256(self, name: str) -> str | None:
        return self.read().get(name, {}).get("sha256")

    def record(self, artifact: Artifact, sha256: str, size: int) -> None:
        entries = self.read()
        entries[artifact.name] = {
            "sha256": sha256,
            "size": size,
            "url": artifact.url,
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        text = json.dumps({"artifacts": dict(sorted(entries.items()))}, indent=2) + "\n"
        atomic_write_text(self.path, text)


class Downloader:
    """Fetches artefacts into ``store``; refuses network access when ``offline``."""

    def __init__(
        self,
        store: Path,
        *,
        offline: bool = False,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        show_progress: bool = True,
    ) -> None:
        self.store = Path(store).expanduser()
        self.offline = offline
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.show_progress = show_progress
        self.lock = LockFile(self.store)

    def path(self, artifact: Artifact) -> Path:
        """Where ``artifact`` lives in the store (whether or not it is there)."""
        return self.store / artifact.cache_name

    def is_cached(self, artifact: Artifact) -> bool:
        return self.path(artifact).is_file()

    def expected_sha256(self, artifact: Artifact) -> str | None:
        """The registry's checksum, else the one pinned in the lock file, else None."""
        return artifact.sha256 or self.lock.sha256(artifact.name)

    def fetch(self, artifact: Artifact, *, force: bool = False) -> Path:
        """The artefact's path in the store, downloading it first if needed (or ``force``)."""
        target = self.path(artifact)
        if target.is_file() and not force:
            return target
        if self.offline:
            raise ZooError(
                f"'{artifact.name}' is not in {self.store} and offline mode is on "
                "(DECOLA_OFFLINE / --offline); download it where there is network access with "
                f"'decola zoo download {artifact.name}' and copy it into {self.store}"
            )
        self.store.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        if force:
            part.unlink(missing_ok=True)
        log.info("downloading %s from %s", artifact.name, artifact.url)
        digest, size = self._download_with_retries(artifact, part)
        expected = self.expected_sha256(artifact)
        if expected and digest != expected:
            part.unlink(missing_ok=True)
            source = "registry" if artifact.sha256 else f"lock file {self.lock.path}"
            raise ZooError(
                f"checksum mismatch for '{artifact.name}': expected {expected} ({source}), got "
                f"{digest}; the download was deleted"
            )
        target.unlink(missing_ok=True)
        part.replace(target)
        if not artifact.sha256 and not expected:
            self.lock.record(artifact, digest, size)
        log.info("saved %s (%d bytes) to %s", artifact.name, size, target)
        return target

    def verify(self, artifact: Artifact) -> VerifyResult:
        """Re-hash a cached file against the registry or lock file (pins it if neither knows)."""
        path = self.path(artifact)
        if not path.is_file():
            return VerifyResult(artifact.name, "missing", path)
        actual = sha256_file(path)
        expected = self.expected_sha256(artifact)
        if expected is None:
            self.lock.record(artifact, actual, path.stat().st_size)
            return VerifyResult(artifact.name, "pinned", path, actual, actual)
        status = "ok" if actual == expected else "mismatch"
        return VerifyResult(artifact.name, status, path, expected, actual)

    # ---------------------------------------------------------------------------------------

    def _download_with_retries(self, artifact: Artifact, part: Path) -> tuple[str, int]:
        for attempt in range(self.retries + 1):
            try:
                return self._download_once(artifact, part)
            except TransientError as err:
                if attempt == self.retries:
                    raise ZooError(
                        f"download of '{artifact.name}' failed after {self.retries} retries "
                        f"({err}); run the command again to resume from {part}"
                    ) from None
                delay = self.backoff * 2**attempt
                log.warning("%s: %s; retrying in %.1f s", artifact.name, err, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _download_once(self, artifact: Artifact, part: Path) -> tuple[str, int]:
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": f"decola/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(artifact.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            return self._handle_http_error(err, artifact, part, offset)
        except (urllib.error.URLError, OSError) as err:
            raise TransientError(f"cannot connect: {getattr(err, 'reason', err)}") from None
        with response:
            status = getattr(response, "status", None) or 200
            content_range = response.headers.get("Content-Range", "")
            if offset and status == 206 and not content_range.startswith(f"bytes {offset}-"):
                part.unlink(missing_ok=True)
                raise TransientError(f"server resumed at the wrong offset ({content_range!r})")
            if offset and status != 206:
                log.info("%s: server ignored the resume request; restarting", artifact.name)
                offset = 0
            _refuse_html(response.headers.get("Content-Type", ""), artifact)
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else artifact.size
            digest = hashlib.sha256()
            if offset:
                with open(part, "rb") as done:
                    while block := done.read(CHUNK_BYTES):
                        digest.update(block)
            size = self._stream(response, part, offset, total, digest, artifact.name)
        if total is not None and size != total:
            raise TransientError(f"connection closed after {size} of {total} bytes")
        return digest.hexdigest(), size

    def _stream(self, response, part: Path, offset: int, total, digest, name: str) -> int:
        """Append the response body to ``part`` (truncated when ``offset`` is 0)."""
        size = offset
        with open(part, "ab" if offset else "wb") as out, _progress(self.show_progress) as bar:
            task = bar.add_task(name, total=total, completed=offset) if bar else None
            while True:
                try:
                    block = response.read(CHUNK_BYTES)
                except (http.client.IncompleteRead, OSError) as err:
                    raise TransientError(f"connection lost after {size} bytes ({err})") from None
                if not block:
                    break
                out.write(block)
                digest.update(block)
                size += len(block)
                if bar:
                    bar.update(task, completed=size)
        return size

    def _handle_http_error(
        self, err: urllib.error.HTTPError, artifact: Artifact, part: Path, offset: int
    ) -> tuple[str, int]:
        if err.code == 416 and offset:
            # Range not satisfiable: the part may already hold the whole file.
            total = _content_range_total(err.headers.get("Content-Range", ""))
            if total == offset:
                return sha256_file(part), offset
            part.unlink(missing_ok=True)
            raise TransientError("server refused to resume; restarting from the beginning")
        if err.code in RETRY_HTTP_CODES:
            raise TransientError(f"HTTP {err.code} {err.reason}")
        raise ZooError(f"'{artifact.name}': HTTP {err.code} {err.reason} from {artifact.url}")


def _refuse_html(content_type: str, artifact: Artifact) -> None:
    if "text/html" in content_type.lower():
        raise ZooError(
            f"'{artifact.name}': {artifact.url} served an HTML page instead of the file (the "
            "link may have moved or need a browser); point a DECOLA_ZOO_REGISTRY entry at a copy"
        )


def _content_range_total(value: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", value)
    return int(match.group(1)) if match else None


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool):
    """A rich progress bar with size, rate and ETA on stderr (or nothing)."""
    if not enabled:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
