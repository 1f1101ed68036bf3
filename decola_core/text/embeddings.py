"""Class-name embedding files: names in category-id order, prompts from a template, a cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from decola_core.errors import ConfigError, DatasetError
from decola_core.text.encoder import DEFAULT_MODEL, ClipTextEncoder
from decola_core.utils.io import atomic_open, atomic_write_text, read_json_file
from decola_core.utils.provenance import sidecar_path
from decola_core.zoo import resolve_weights, sha256_file

DEFAULT_TEMPLATE = "a {}"


def read_class_names(path: str | Path) -> list[str]:
    """Class names from an LVIS/COCO file or a category-info list (sorted by id), or from a
    text file with one name per line."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json_file(path, "annotation file")
        categories = data.get("categories") if isinstance(data, dict) else data
        if not isinstance(categories, list):
            raise DatasetError(f"{path}: expected a 'categories' list or a list of categories")
        try:
            return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
        except (KeyError, TypeError):
            raise DatasetError(f"{path}: every category needs 'id' and 'name'") from None
    if not path.is_file():
        raise DatasetError(f"{path}: no such names file")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"{path}: no class names (one per line expected)")
    return names


def prompts_for(names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """``template`` with each name (LVIS underscores kept, as the released embeddings)."""
    if "{}" not in template:
        raise ConfigError(f"template {template!r} has no '{{}}' for the class name")
    return [template.format(name) for name in names]


def embed_names(encoder, names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """(len(names), dim) float32 embeddings of the prompts, not normalised."""
    return encoder.encode(prompts_for(names, template))


class EmbeddingCache:
    """Embeddings stored under ``<cache_dir>/embeddings`` keyed by (model, weights checksum,
    template, names), so a vocabulary is encoded once."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.folder = Path(cache_dir).expanduser() / "embeddings"

    @staticmethod
    def key(model: str, weights_sha256: str, template: str, names: Sequence[str]) -> str:
        text = json.dumps([model, weights_sha256, template, list(names)], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path(self, model: str, weights_sha256: str, template: str, names: Sequence[str]) -> Path:
        return self.folder / f"{self.key(model, weights_sha256, template, names)}.npy"

    def lookup(
        self, model: str, weights_sha256: str, template: str, names: Sequence[str]
    ) -> np.ndarray | None:
        """The cached embeddings, or None (a damaged entry counts as missing)."""
        path = self.path(model, weights_sha256, template, names)
        try:
            array = np.load(path)
        except (OSError, ValueError):
            return None
        return array if array.ndim == 2 and array.shape[0] == len(names) else None

    def get_or_compute(
        self, encoder, weights_sha256: str, names: Sequence[str], template: str = DEFAULT_TEMPLATE
    ) -> tuple[np.ndarray, bool]:
        """(embeddings, cache hit)."""
        cached = self.lookup(encoder.name, weights_sha256, template, names)
        if cached is not None:
            return cached, True
        array = embed_names(encoder, names, template)
        write_embeddings(self.path(encoder.name, weights_sha256, template, names), array)
        return array, False


def write_embeddings(path: str | Path, array: np.ndarray) -> None:
    """Save a .npy file atomically."""
    with atomic_open(path, "wb") as handle:
        np.save(handle, array)


def write_embedding_file(path: str | Path, array: np.ndarray, *, provenance: dict) -> None:
    """Save embeddings with their provenance (text encoder, weights SHA-256, template, names)
    in the sidecar ``FILE.npy.json``; the dimension and row count are added here."""
    write_embeddings(path, array)
    record = {**provenance, "dim": int(array.shape[1]), "rows": int(array.shape[0])}
    atomic_write_text(sidecar_path(path), json.dumps(record, ensure_ascii=False) + "\n")


def encoder_provenance(model: str, weights_sha256: str, template: str) -> dict:
    """The provenance of embeddings from an open_clip text tower (a ``.json`` architecture
    file is named by its stem, as open_clip registers it)."""
    name = Path(model).stem if str(model).endswith(".json") else model
    return {"encoder": name, "weights_sha256": weights_sha256, "template": template}


def embed_class_file(
    names_file: str | Path,
    output: str | Path,
    clip_weights: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    template: str = DEFAULT_TEMPLATE,
    object_output: str | Path | None = None,
    device: str = "cpu",
    cache_dir: str | Path = "~/.cache/decola",
    offline: bool = False,
    say=None,
) -> tuple[int, int]:
    """``decola data embed``: the class names of ``names_file`` (one per line, or an LVIS/COCO
    file's categories by id) embedded with CLIP (weights a path or zoo name) into ``output``
    and, with ``object_output``, the "a object" row; returns the array's shape."""
    names = read_class_names(names_file)
    weights = resolve_weights(str(clip_weights), Path(cache_dir).expanduser(), offline=offline)
    encoder = ClipTextEncoder(model, weights, device=device)
    if say is not None:
        say(f"embedding {len(names):,} names as {template!r} with {model} ({weights})")
    array = embed_names(encoder, names, template)
    provenance = encoder_provenance(model, sha256_file(Path(weights)), template)
    write_embedding_file(output, array, provenance={**provenance, "names": names})
    if object_output is not None:
        obj = embed_names(encoder, ["object"], template)
        write_embedding_file(object_output, obj, provenance={**provenance, "names": ["object"]})
    return array.shape


def vocabulary_embeddings(
    names: Sequence[str],
    clip_weights: str | Path,
    *,
    model: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    cache_dir: str | Path = "~/.cache/decola",
    device: str = "cpu",
    weights_sha256: str | None = None,
) -> tuple[np.ndarray, bool]:
    """Embeddings of a custom vocabulary with local CLIP weights, cached by (model, weights
    checksum, template, names). Returns (embeddings, cache hit). ``weights_sha256`` saves
    hashing the weights again when the caller has it."""
    model = model or DEFAULT_MODEL
    clip_weights = Path(clip_weights)
    if not clip_weights.is_file():
        raise ConfigError(f"CLIP weights file not found: {clip_weights}")
    checksum = weights_sha256 or sha256_file(clip_weights)
    cache = EmbeddingCache(cache_dir)
    cached = cache.lookup(model, checksum, template, names)
    if cached is not None:
        return cached, True
    encoder = ClipTextEncoder(model, clip_weights, device=device)
    return cache.get_or_compute(encoder, checksum, names, template)
