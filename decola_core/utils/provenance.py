"""Where class embeddings come from: a sidecar ``FILE.npy.json`` beside each embedding file that
decola writes, naming the text encoder (model and weights SHA-256), the prompt template and the
dimension. Checkpoints record the provenance of the embeddings they were trained with, so a model
is never silently scored against embeddings from another encoder (their spaces differ)."""

from __future__ import annotations

import json
from pathlib import Path

#: the fields that identify an embedding space; the template and names may differ
SPACE_FIELDS = ("encoder", "weights_sha256", "dim")


def sidecar_path(embeddings: str | Path) -> Path:
    """``FILE.npy`` -> ``FILE.npy.json``."""
    return Path(str(embeddings) + ".json")


def read_sidecar(embeddings: str | Path) -> dict | None:
    """The provenance written beside an embedding file, or None when there is none (a plain
    ``.npy`` file, e.g. of the original release) or it is unreadable."""
    path = sidecar_path(embeddings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(provenance: dict) -> str:
    """A short human description: ``ViT-B-32-quickgelu (weights 1a2b3c4d…), 512-d``."""
    parts = [str(provenance.get("encoder", "unknown encoder"))]
    if provenance.get("weights_sha256"):
        parts[0] += f" (weights {str(provenance['weights_sha256'])[:12]}…)"
    if provenance.get("dim"):
        parts.append(f"{provenance['dim']}-d")
    return ", ".join(parts)


def same_space(a: dict | None, b: dict | None) -> bool | None:
    """Whether two provenances name the same embedding space; None when either is unknown.
    Fields only one side records are not compared."""
    if not a or not b:
        return None
    shared = [f for f in SPACE_FIELDS if a.get(f) is not None and b.get(f) is not None]
    if not shared:
        return None
    return all(a[f] == b[f] for f in shared)
