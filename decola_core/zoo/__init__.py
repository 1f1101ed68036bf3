"""The model zoo: a registry of released artefacts and a resumable, verified downloader."""

from decola_core.zoo.download import Downloader, VerifyResult, sha256_file
from decola_core.zoo.registry import Artifact, Registry, ZooError, load_registry
from decola_core.zoo.resolve import resolve_weights, zoo_store

__all__ = [
    "Artifact",
    "Downloader",
    "Registry",
    "VerifyResult",
    "ZooError",
    "load_registry",
    "resolve_weights",
    "sha256_file",
    "zoo_store",
]
