"""Images in, detections out: resizing, class or object mode, post-processing (spec §4.3)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from decola_core.data.transforms import pil_resize, shortest_edge_size
from decola_core.errors import InputError
from decola_core.modeling.build import build_model
from decola_core.modeling.checkpoint import load_weights
from decola_core.modeling.interface import DetectionModel
from decola_core.modeling.postprocess import Detections
from decola_core.modeling.prompts import prompt_chunks
from decola_core.modeling.resources import class_names as recipe_class_names
from decola_core.zoo import resolve_weights


def resize_shortest_edge(image: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """Resize a uint8 (3, H, W) image so its short side is ``min_size`` and its long side at
    most ``max_size``: the original test mapper's ResizeShortestEdge, bit for bit (its size
    rounding and PIL's bilinear filter, which antialiases when shrinking)."""
    h, w = image.shape[1:]
    new_h, new_w = shortest_edge_size(int(h), int(w), min_size, max_size)
    if (new_h, new_w) == (h, w):
        return image
    return pil_resize(image, new_h, new_w)


def as_uint8_chw(image) -> torch.Tensor:
    """A (3, H, W) uint8 RGB tensor from a tensor, an (H, W, 3) array or a PIL image."""
    if isinstance(image, torch.Tensor):
        tensor = image
    else:
        array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise InputError(f"expected an RGB image of shape (H, W, 3), got {array.shape}")
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # PIL's buffers are read-only
            array = array.copy()
        tensor = torch.from_numpy(array).permute(2, 0, 1)
    if tensor.dim() != 3 or tensor.shape[0] != 3 or tensor.dtype != torch.uint8:
        raise InputError(
            f"expected a uint8 tensor of shape (3, H, W), got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor


class Predictor:
    """Runs a detector on images of any size and returns one :class:`Detections` per image.

    With ``classes`` a model that ``supports_prompts`` is conditioned on them (class mode; long
    lists run in chunks of ``prompt_chunk`` prompts); without, it detects in object mode. A model
    without class mode restricts its output to those classes instead.
    """

    def __init__(
        self,
        model: DetectionModel,
        *,
        min_size: int = 800,
        max_size: int = 1333,
        max_detections: int = 300,
        score_threshold: float = 0.0,
        prompt_chunk: int = 64,
        class_names: Sequence[str] | None = None,
        recipe_name: str = "",
    ) -> None:
        self.model = model.eval()
        self.recipe_name = recipe_name
        self.class_names = list(class_names) if class_names is not None else None
        self.min_size, self.max_size = min_size, max_size
        self.max_detections, self.score_threshold = max_detections, score_threshold
        self.prompt_chunk = prompt_chunk

    @classmethod
    def from_recipe(
        cls,
        recipe,
        weights: str | Path,
        *,
        data_root: Path | str = "datasets",
        cache_dir: Path | str = "~/.cache/decola",
        offline: bool = False,
        device: str | torch.device = "cpu",
        trusted: bool = False,
        allow_embedding_mismatch: bool = False,
    ) -> Predictor:
        """Build the recipe's model, load ``weights`` (a path or zoo name) and wrap it."""
        model = build_model(recipe, data_root=data_root)
        weights = resolve_weights(str(weights), Path(cache_dir), offline=offline)
        load_weights(
            model, weights, trusted=trusted, allow_embedding_mismatch=allow_embedding_mismatch
        )
        return cls(
            model.to(device),
            min_size=recipe.test.min_size,
            max_size=recipe.test.max_size,
            max_detections=recipe.test.detections_per_image,
            score_threshold=recipe.test.score_threshold,
            class_names=recipe_class_names(recipe, data_root),
            recipe_name=recipe.name,
        )

    def use_vocabulary(self, names: Sequence[str], embeddings: torch.Tensor) -> None:
        """Detect ``names`` (with their CLIP embeddings, rows in the same order) from now on."""
        if len(names) != embeddings.shape[0]:
            raise InputError(f"{len(names)} names but {embeddings.shape[0]} embeddings")
        self.model.set_vocabulary(embeddings)
        self.class_names = list(names)

    def class_ids(self, classes: Sequence[int | str] | torch.Tensor) -> torch.Tensor:
        """0-based class ids for ids or names (names need ``class_names``)."""
        if isinstance(classes, torch.Tensor):
            return classes.to(torch.int64).flatten()
        ids = []
        for c in classes:
            if isinstance(c, str):
                if self.class_names is None:
                    raise InputError("class names need the predictor's class_names")
                ids.append(_class_id(c, self.class_names))
            else:
                ids.append(int(c))
        return torch.tensor(ids, dtype=torch.int64)

    @torch.no_grad()
    def __call__(
        self, images: Sequence, classes: Sequence[int | str] | torch.Tensor | None = None
    ) -> list[Detections]:
        """Detections for ``images``; ``classes`` are 0-based ids or names of ``class_names``."""
        tensors = [as_uint8_chw(img) for img in images]
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
        resized = [resize_shortest_edge(t, self.min_size, self.max_size) for t in tensors]
        wanted = None if classes is None else self.class_ids(classes).unique()
        if wanted is not None and wanted.numel() == 0:
            raise InputError("classes is empty; pass None for object mode")
        limits = {"max_detections": self.max_detections, "score_threshold": self.score_threshold}
        if wanted is None or not self.model.supports_prompts:
            allowed = None if wanted is None else [wanted] * len(resized)
            return self.model.detect(resized, sizes, allowed_classes=allowed, **limits)
        per_chunk = [
            self.model.detect(resized, sizes, prompt_ids=chunk, **limits)
            for chunk in prompt_chunks(wanted, self.prompt_chunk)
        ]
        return [
            _merge([dets[i] for dets in per_chunk], self.max_detections) for i in range(len(sizes))
        ]


def _class_id(name: str, names: list[str]) -> int:
    if name in names:
        return names.index(name)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise InputError(f"unknown class name '{name}'{hint}")


def _merge(parts: list[Detections], limit: int) -> Detections:
    if len(parts) == 1:
        return parts[0]
    scores = torch.cat([p.scores for p in parts])
    order = torch.argsort(scores, descending=True, stable=True)[:limit]
    return Detections(
        torch.cat([p.boxes for p in parts])[order],
        scores[order],
        torch.cat([p.labels for p in parts])[order],
        parts[0].image_size,
    )
