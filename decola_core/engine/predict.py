"""Run a detector over image files: one JSON of detections and one annotated PNG per image."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from decola_core.config.loader import apply_overrides, load_recipe, validate_recipe
from decola_core.data.images import IMAGE_SUFFIXES, read_image
from decola_core.engine.checkpointer import Checkpointer
from decola_core.errors import ConfigError, DecolaError
from decola_core.jobs import PredictJob
from decola_core.modeling.postprocess import Detections
from decola_core.modeling.predictor import Predictor
from decola_core.structures.masks import mask_rle
from decola_core.text import vocabulary_embeddings
from decola_core.utils.allocator import retain_freed_memory
from decola_core.utils.draw import draw_instances
from decola_core.utils.io import atomic_open, atomic_write_text
from decola_core.zoo import load_registry, resolve_weights


def recipe_for_weights(spec: str, weights: Path, overrides: Sequence[str] = ()):
    """The recipe of a zoo entry (``spec`` is its name) or the one a ``decola train``
    checkpoint records; anything else must be named explicitly."""
    registry = load_registry()
    name = spec.removeprefix("zoo:")
    if name in registry and registry.get(name).recipe:
        return load_recipe(registry.get(name).recipe, overrides)
    state = Checkpointer.load(weights)
    if isinstance(state, dict) and isinstance(state.get("recipe"), dict):
        tree = apply_overrides(state["recipe"], list(overrides))
        return validate_recipe(tree, f"the recipe recorded in {weights}")
    raise ConfigError(
        f"{weights} does not record its recipe; name it (--config, or config= in Python; "
        "see 'decola config list')"
    )


def use_custom_vocabulary(
    predictor: Predictor,
    names: Sequence[str],
    clip_weights: str | Path,
    *,
    clip_model: str | None = None,
    template: str = "a {}",
    cache_dir: str | Path = "~/.cache/decola",
    device: str = "cpu",
    offline: bool = False,
) -> bool:
    """Make ``predictor`` detect ``names`` (any words), embedded with local CLIP weights (a
    path or zoo name) and cached; returns whether the embeddings came from the cache."""

    clip_weights = resolve_weights(str(clip_weights), Path(cache_dir).expanduser(), offline=offline)
    embeddings, hit = vocabulary_embeddings(
        list(names), clip_weights, model=clip_model, template=template, cache_dir=cache_dir,
        device=device,
    )  # fmt: skip
    try:
        predictor.use_vocabulary(list(names), torch.from_numpy(embeddings))
    except ValueError as err:
        raise ConfigError(f"{clip_weights}: {err}") from None
    return hit


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in folders."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif item.is_file():
            files.append(item)
        else:
            raise DecolaError(f"{item}: no such image file or folder")
    if not files:
        raise DecolaError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, inputs))}"
        )
    return files


def detections_record(detections: Detections, names: Sequence[str], source: Path) -> dict:
    """A JSON-ready record: image size and, per detection, xyxy box, score, class id and name."""
    height, width = detections.image_size
    records = [
        {
            "box_xyxy": [round(v, 2) for v in box],
            "score": round(score, 4),
            "class_id": label,
            "class_name": names[label],
        }
        for box, score, label in zip(
            detections.boxes.tolist(),
            detections.scores.tolist(),
            detections.labels.tolist(),
            strict=True,
        )
    ]
    if detections.masks is not None:
        for record, mask in zip(records, detections.masks, strict=True):
            record["mask"] = mask_rle(mask)
            record["mask_area"] = int(mask.sum())
    return {"image": str(source), "height": height, "width": width, "detections": records}


def draw_detections(image, detections: Detections, names: Sequence[str]):
    """A PIL image with each detection's box and a "name score" tag, coloured by class, over
    its mask (translucent) when the detector predicts masks."""
    labels = detections.labels.tolist()
    texts = [f"{names[c]} {s:.2f}" for c, s in zip(labels, detections.scores.tolist(), strict=True)]
    return draw_instances(
        image, detections.boxes.cpu().numpy(), texts, labels, masks=detections.masks
    )


def with_masks(detections: Detections, image: torch.Tensor, masker) -> Detections:
    """``detections`` with the masks ``masker(image, boxes)`` gives (e.g. SAM's)."""
    return replace(detections, masks=masker(image, detections.boxes))


def run_predict(
    predictor: Predictor,
    job: PredictJob,
    on_image: Callable[[Path, Detections], None] | None = None,
    masker: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[Path]:
    """Detect in every image; write ``<stem>.json`` and ``<stem>.png`` per image (atomically).
    Returns the JSON paths. Output names keep the folder structure when stems collide.
    ``masker`` (image, boxes) -> masks replaces the detector's own masks (if any)."""

    names = predictor.class_names
    if names is None:
        raise DecolaError("the predictor has no class names; build it with Predictor.from_recipe")
    try:
        wanted = None if job.classes is None else predictor.class_ids(job.classes)
    except ValueError as err:
        raise DecolaError(f"classes: {err}") from None
    prompts = wanted.tolist() if wanted is not None and job.conditioned else None
    retain_freed_memory()
    written = []
    for path, stem in zip(job.images, _output_stems(job.images), strict=True):
        try:
            image = read_image(path)
        except OSError as err:  # UnreadableImage names the file and the reason
            message = str(err) if isinstance(err, DecolaError) else f"{path}: {err}"
            raise DecolaError(message) from None
        detections = filter_detections(
            predictor([image], prompts)[0], job.threshold, job.max_detections, wanted
        )
        if masker is not None:
            detections = with_masks(detections, image, masker)
        record = detections_record(detections, names, path)
        target = job.output_dir / f"{stem}.json"
        atomic_write_text(target, json.dumps(record) + "\n", protect=(path,))
        with atomic_open(job.output_dir / f"{stem}.png", "wb", protect=(path,)) as handle:
            draw_detections(image, detections, names).save(handle, format="PNG")
        written.append(target)
        if on_image is not None:
            on_image(path, detections)
    return written


def filter_detections(
    detections: Detections, threshold: float, limit: int, classes: torch.Tensor | None = None
) -> Detections:
    """The ``limit`` best detections scoring at least ``threshold`` (of ``classes`` only, when
    given), boxes clipped to the image."""
    order = detections.scores.argsort(descending=True, stable=True)
    ok = detections.scores[order] >= threshold
    if classes is not None:
        ok &= torch.isin(detections.labels[order], classes)
    keep = order[ok][:limit]
    height, width = detections.image_size
    boxes = detections.boxes[keep].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)  # drawn and reported inside the image
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return Detections(
        boxes,
        detections.scores[keep],
        detections.labels[keep],
        detections.image_size,
        masks=None if detections.masks is None else detections.masks[keep],
    )


def _output_stems(images: list[Path]) -> list[str]:
    stems = [p.stem for p in images]
    if len(set(stems)) == len(stems):
        return stems
    # Same names in different folders: use the path relative to their common parent.
    import os

    common = Path(os.path.commonpath([p.resolve().parent for p in images]))
    return [
        str(p.resolve().with_suffix("").relative_to(common)).replace(os.sep, "__") for p in images
    ]
