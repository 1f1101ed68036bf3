"""Run a model over an LVIS-format dataset, write per-rank prediction shards, combine them by
streaming into one results file, and score it (standard AP, fixed AP or c-mAP@k)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decola_core.data.images import read_image
from decola_core.data.lvis import LvisDataset
from decola_core.errors import DatasetError
from decola_core.modeling.predictor import Predictor
from decola_core.structures.masks import mask_rle
from decola_core.utils.io import atomic_open

log = logging.getLogger(__name__)


@dataclass
class InferenceStats:
    images: int = 0
    detections: int = 0
    bad_images: int = 0


def shard_range(total: int, rank: int, world_size: int) -> range:
    """The contiguous block of indices of one rank (ceil(total / world) per rank)."""
    per_rank = -(-total // world_size)
    return range(min(rank * per_rank, total), min((rank + 1) * per_rank, total))


def predict_shard(
    predictor: Predictor,
    dataset: LvisDataset,
    shard: Path,
    *,
    conditioned: bool,
    indices: range,
    prompt_every_class: bool = False,
    max_bad_images: int = 0,
    on_image: Callable[[], None] | None = None,
) -> InferenceStats:
    """Detections of the images in ``indices`` as LVIS records in a JSON-lines ``shard``.

    Conditioned: each image is prompted with its own GT classes (object mode when it has none);
    ``prompt_every_class``: otherwise prompted with every class (class mode, in chunks).
    A missing or corrupt image is skipped and counted; more than ``max_bad_images`` aborts.
    """
    stats = InferenceStats()
    with atomic_open(shard, "wb") as out:
        for index in indices:
            record = dataset.records[index]
            try:
                image = read_image(record.path)
            except (OSError, ValueError) as err:
                stats.bad_images += 1
                log.warning("skipping unreadable image %s (%s)", record.path, err)
                if stats.bad_images > max_bad_images:
                    raise DatasetError(
                        f"{stats.bad_images} unreadable images (e.g. {record.path}); allow more "
                        "with --max-bad-images or fix the data"
                    ) from None
                continue
            classes = np.unique(record.classes) if conditioned else None
            if classes is None and prompt_every_class:
                classes = np.arange(len(dataset.category_ids))
            det = predictor(
                [image], classes=classes if classes is not None and classes.size else None
            )[0]
            scale_y, scale_x = record.height / image.shape[1], record.width / image.shape[2]
            boxes = det.boxes.double().numpy() * np.array([scale_x, scale_y, scale_x, scale_y])
            category = dataset.category_id(det.labels.numpy())
            masks = _masks_at(det.masks, (record.height, record.width))
            for j, (box, cat, score) in enumerate(
                zip(boxes, category, det.scores.double().numpy(), strict=True)
            ):
                line = {
                    "image_id": record.image_id,
                    "category_id": int(cat),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": float(score),
                }
                if masks is not None:
                    line["segmentation"] = mask_rle(masks[j])
                out.write(_json(line) + b"\n")
            stats.images += 1
            stats.detections += len(det)
            if on_image is not None:
                on_image()
    return stats


def _masks_at(masks, size: tuple[int, int]):
    """Masks at the annotation's image size (the file's size when it disagrees)."""
    if masks is None or tuple(masks.shape[-2:]) == tuple(size):
        return masks
    from torch.nn import functional as F

    return F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5


def combine_shards(shards: list[Path], output: Path) -> int:
    """Stream JSON-lines shards into one JSON array file (atomically); returns the count."""
    count = 0
    with atomic_open(output, "wb") as out:
        out.write(b"[")
        for shard in shards:
            with open(shard, "rb") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    out.write((b",\n" if count else b"\n") + line.rstrip(b"\n"))
                    count += 1
        out.write(b"\n]\n")
    return count


def _json(record: dict) -> bytes:
    import orjson

    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
