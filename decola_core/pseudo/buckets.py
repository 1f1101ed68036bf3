"""Batching for self-labelling without padding: images are grouped into buckets of one input
shape and one number of labels, and each bucket runs in batches with per-image prompts.

Nothing is padded and no image sees another's prompts, so every image gets the predictions it
gets alone (up to float summation order), while a GPU runs full batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from decola_core.modeling.interface import DetectionModel
from decola_core.modeling.postprocess import PseudoBoxes

#: Decoded images held at once, in batches: more gives fuller buckets, costs host memory.
POOL_BATCHES = 8


def size_buckets(images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices grouped by (image height, width, number of distinct labels), first seen first."""
    buckets: dict[tuple[int, int, int], list[int]] = {}
    for i, (image, own) in enumerate(zip(images, labels, strict=True)):
        key = (int(image.shape[-2]), int(image.shape[-1]), int(torch.unique(own).numel()))
        buckets.setdefault(key, []).append(i)
    return list(buckets.values())


def pseudo_label_in_buckets(
    model: DetectionModel,
    images: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    *,
    batch_size: int,
    choice: str,
    min_area: float,
) -> list[PseudoBoxes]:
    """``model.pseudo_label`` of every image, batched by bucket; results in input order."""
    results: list[PseudoBoxes | None] = [None] * len(images)
    for bucket in size_buckets(images, labels):
        for start in range(0, len(bucket), batch_size):
            members = bucket[start : start + batch_size]
            picks = model.pseudo_label(
                [images[i] for i in members],
                [labels[i] for i in members],
                choice=choice,
                min_area=min_area,
                per_image_prompts=True,
            )
            for i, pick in zip(members, picks, strict=True):
                results[i] = pick
    return results  # type: ignore[return-value]
