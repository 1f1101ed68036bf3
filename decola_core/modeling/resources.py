"""The files a recipe's model is built from: class names and statistics (category info) and the
class-embedding arrays, each checked against the recipe with a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from decola_core.config.schema import Recipe
from decola_core.errors import ConfigError
from decola_core.utils.provenance import read_sidecar


def resolve_path(path: str, data_root: Path | str) -> Path:
    """A recipe path: absolute as it is, relative below ``data_root``."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(data_root) / candidate


def class_names(recipe: Recipe, data_root: Path | str = "datasets") -> list[str]:
    """The names of the recipe's classes (0-based class id order), from its category info."""
    c = recipe.model.classifier
    path = resolve_path(c.category_info, Path(data_root))
    categories = read_categories(path, c.num_classes)
    names = [cat.get("name") for cat in categories]
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: every category needs a 'name'")
    return names


def load_embeddings(path: Path, rows: int | None, dim: int, what: str) -> torch.Tensor:
    """A (rows, dim) float32 tensor from a .npy file, checked against the recipe."""
    if not path.is_file():
        raise ConfigError(
            f"{what} file not found: {path} (get it with 'decola zoo download' or set the path "
            "in the recipe)"
        )
    try:
        array = np.load(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable .npy file ({err})") from None
    if array.ndim != 2 or array.shape[1] != dim or (rows is not None and array.shape[0] != rows):
        expected = f"({rows if rows is not None else 'N'}, {dim})"
        raise ConfigError(f"{path}: {what} has shape {array.shape}, expected {expected}")
    return torch.from_numpy(array.astype(np.float32))


def read_categories(path: Path, num_classes: int) -> list[dict]:
    """The categories of a category-info file (a list, or an LVIS file's ``categories``), in id
    order, checked against the recipe's class count."""
    if not path.is_file():
        raise ConfigError(
            f"category info file not found: {path} (decola zoo download lvis-category-info)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable JSON file ({err})") from None
    categories = data.get("categories") if isinstance(data, dict) else data
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), int) for c in categories
    ):
        raise ConfigError(f"{path}: expected a list of categories, each with an integer 'id'")
    if len(categories) != num_classes:
        raise ConfigError(
            f"{path}: {len(categories)} categories, the recipe has {num_classes} classes"
        )
    return sorted(categories, key=lambda c: c["id"])


def load_fed_loss_weight(path: Path, num_classes: int, exponent: float) -> torch.Tensor:
    """image_count ** exponent per class, in category-id order, from a category-info file."""
    try:
        counts = [c["image_count"] for c in read_categories(path, num_classes)]
    except KeyError:
        raise ConfigError(f"{path}: every category needs 'image_count'") from None
    return torch.tensor(counts, dtype=torch.float32) ** exponent


def embedding_provenance(recipe: Recipe, data_root: Path | str = "datasets") -> dict | None:
    """Where the recipe's class embeddings come from: the file's sidecar, else the zoo entry
    with the file's SHA-256 (the original release's files), else None (unknown)."""
    path = resolve_path(recipe.model.classifier.embeddings, data_root)
    found = read_sidecar(path)
    if found is not None or not path.is_file():
        return found
    from decola_core.zoo import load_registry, sha256_file

    digest = sha256_file(path)
    for entry in load_registry():
        if entry.provenance and entry.sha256 == digest:
            return dict(entry.provenance)
    return None
