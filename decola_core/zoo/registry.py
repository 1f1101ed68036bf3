"""The registry of downloadable artefacts: built-in entries plus a user file.

The built-in list (``registry.yaml`` beside this module) holds every artefact of the original
release. ``DECOLA_ZOO_REGISTRY`` may name a YAML file with more ``artifacts:``; its entries are
added, and replace built-in entries of the same name (e.g. a private mirror of a checkpoint).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from decola_core.config.loader import format_validation_error
from decola_core.errors import DecolaError

BUILTIN_REGISTRY = Path(__file__).with_name("registry.yaml")
REGISTRY_ENV = "DECOLA_ZOO_REGISTRY"
ZOO_PREFIX = "zoo:"

Kind = Literal["checkpoint", "backbone", "pseudo-labels", "metadata", "clip", "sam"]


class ZooError(DecolaError):
    """An unknown artefact, a bad registry file, or a failed download."""


class Artifact(BaseModel):
    """One downloadable file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    kind: Kind
    url: str
    filename: str | None = Field(
        None, description="Name in the cache (default: name + URL suffix)."
    )
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(None, ge=0, description="Bytes, when known.")
    recipe: str | None = None
    backbone: str | None = None
    data: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    format: str | None = None
    description: str = ""
    data_path: str | None = Field(None, description="Where the file belongs under the data root.")
    runnable: bool = Field(True, description="False for artefacts decola cannot run (CenterNet2).")
    provenance: dict[str, str | int] | None = Field(
        None, description="Embedding files: text encoder, its weights' SHA-256, template, dim."
    )
    source: str = Field("built-in", description="The registry file the entry came from.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if urlparse(url).scheme not in ("http", "https", "file"):
            raise ValueError(f"url must be http(s):// or file:// (got {url!r})")
        return url

    @property
    def cache_name(self) -> str:
        """The file name in the cache."""
        if self.filename:
            return self.filename
        suffix = Path(urlparse(self.url).path).suffix
        return f"{self.name}{suffix}"


class Registry:
    """Artefacts by name, in registry order."""

    def __init__(self, artifacts: list[Artifact]) -> None:
        self._by_name: dict[str, Artifact] = {}
        for artifact in artifacts:
            self._by_name[artifact.name] = artifact

    def __iter__(self) -> Iterator[Artifact]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Artifact:
        """The artefact ``name`` (a ``zoo:`` prefix is accepted), or a ZooError with a hint."""
        key = name.removeprefix(ZOO_PREFIX)
        if key in self._by_name:
            return self._by_name[key]
        close = difflib.get_close_matches(key, self._by_name, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ZooError(f"unknown zoo artefact '{key}'{hint}; 'decola zoo list' shows all")


def read_registry_file(path: Path, source: str) -> list[Artifact]:
    """Parse one registry YAML (``artifacts:`` list); errors name the file and the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ZooError(f"{path}: cannot read the zoo registry ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ZooError(f"{path}: invalid YAML ({getattr(err, 'problem', err)})") from None
    entries = data.get("artifacts") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ZooError(f"{path}: expected a mapping with an 'artifacts:' list")
    artifacts = []
    for index, entry in enumerate(entries):
        label = entry.get("name", f"#{index}") if isinstance(entry, dict) else f"#{index}"
        try:
            artifacts.append(Artifact.model_validate({**entry, "source": source}))
        except (ValidationError, TypeError) as err:
            detail = (
                format_validation_error(err, Artifact)
                if isinstance(err, ValidationError)
                else str(err)
            )
            raise ZooError(f"{path}: artifact {label}: {detail}") from None
    return artifacts


def load_registry(user_file: Path | str | None = None) -> Registry:
    """Built-in artefacts plus those of ``user_file`` (default: ``$DECOLA_ZOO_REGISTRY``)."""
    artifacts = read_registry_file(BUILTIN_REGISTRY, "built-in")
    user_file = user_file or os.environ.get(REGISTRY_ENV)
    if user_file:
        path = Path(user_file).expanduser()
        if not path.is_file():
            raise ZooError(f"zoo registry file not found: {path} (from {REGISTRY_ENV})")
        artifacts += read_registry_file(path, str(path))
    return Registry(artifacts)
