"""Raw outputs -> per-image detections in original-image pixels (spec §4.3).

One result per input image, always (the original dropped images whose detections were all
below the threshold, which misaligned outputs with inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decola_core.structures.boxes import box_cxcywh_to_xyxy


@dataclass
class Detections:
    """Detections of one image: boxes xyxy in original pixels, scores, 0-based class ids."""

    boxes: torch.Tensor  # (n, 4)
    scores: torch.Tensor  # (n,)
    labels: torch.Tensor  # (n,) int64
    image_size: tuple[int, int]  # (height, width) of the original image
    masks: torch.Tensor | None = None  # (n, height, width) bool, for detectors with masks

    def __len__(self) -> int:
        return int(self.scores.numel())


@dataclass
class PseudoBoxes:
    """One image's pseudo boxes: labels, cxcywh boxes normalised to the image, sigmoid scores."""

    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor


def _scaled_boxes(pred_boxes: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
    scale = torch.tensor(
        [[w, h, w, h] for h, w in sizes], dtype=pred_boxes.dtype, device=pred_boxes.device
    )
    return box_cxcywh_to_xyxy(pred_boxes) * scale[:, None, :]


def postprocess(
    pred_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    original_sizes: list[tuple[int, int]],
    *,
    prompt_inds: torch.Tensor | None = None,
    max_detections: int = 300,
    score_threshold: float = 0.0,
    allowed_classes: list[torch.Tensor] | None = None,
) -> list[Detections]:
    """Top-k detections per image.

    Class mode (``prompt_inds`` given, logits (B, Q, 1)): the top min(k, Q) queries, labelled
    with their prompt. Object mode (logits (B, Q, C)): the top k (query, class) pairs.
    ``allowed_classes[b]`` restricts image b to those classes (the oracle protocol).
    Scores must be strictly above ``score_threshold``.
    """
    logits = pred_logits
    if allowed_classes is not None:
        logits = logits.clone()
        for b, allowed in enumerate(allowed_classes):
            keep = torch.zeros(logits.shape[2], dtype=torch.bool, device=logits.device)
            keep[allowed.to(logits.device)] = True
            logits[b, :, ~keep] = float("-inf")
    batch, queries, classes = logits.shape
    prob = logits.sigmoid().view(batch, -1)
    k = (
        min(max_detections, queries)
        if prompt_inds is not None
        else min(max_detections, prob.shape[1])
    )
    scores, index = torch.topk(prob, k, dim=1)
    query = torch.div(index, classes, rounding_mode="floor")
    labels = torch.gather(prompt_inds, 1, query) if prompt_inds is not None else index % classes
    boxes = torch.gather(
        _scaled_boxes(pred_boxes, original_sizes), 1, query.unsqueeze(-1).expand(-1, -1, 4)
    )
    results = []
    for b in range(batch):
        keep = scores[b] > score_threshold
        results.append(
            Detections(boxes[b][keep], scores[b][keep], labels[b][keep], original_sizes[b])
        )
    return results
