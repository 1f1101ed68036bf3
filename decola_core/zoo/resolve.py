"""``--weights PATH|NAME``: a local file, or a zoo artefact fetched into the cache on demand."""

from __future__ import annotations

from pathlib import Path

from decola_core.zoo.download import Downloader
from decola_core.zoo.registry import ZOO_PREFIX, Registry, ZooError, load_registry

ZOO_SUBDIR = "zoo"


def zoo_store(cache_dir: Path) -> Path:
    """The folder under the cache directory where zoo artefacts are kept."""
    return Path(cache_dir).expanduser() / ZOO_SUBDIR


def resolve_weights(
    spec: str,
    cache_dir: Path,
    *,
    offline: bool = False,
    registry: Registry | None = None,
    show_progress: bool = True,
) -> Path:
    """Turn ``spec`` (a path, ``zoo:NAME`` or ``NAME``) into a local file.

    An existing path wins; otherwise the name is looked up in the zoo and downloaded into the
    cache unless it is already there (offline mode only uses the cache).
    """
    path = Path(spec).expanduser()
    if not spec.startswith(ZOO_PREFIX) and path.is_file():
        return path
    registry = registry or load_registry()
    try:
        artifact = registry.get(spec)
    except ZooError as err:
        if spec.startswith(ZOO_PREFIX):
            raise
        raise ZooError(
            f"weights '{spec}' is neither an existing file nor a zoo name: {err}"
        ) from None
    downloader = Downloader(zoo_store(cache_dir), offline=offline, show_progress=show_progress)
    return downloader.fetch(artifact)
