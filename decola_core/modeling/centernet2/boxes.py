"""Box arithmetic of the CenterNet2 family, written as detectron2 computes it (the released
models' numbers depend on the exact order of operations): the cascade's box coder, IoU,
clipping and the empty-box test. Boxes are (N, 4) XYXY pixels of the fed image."""

from __future__ import annotations

import math

import torch

from decola_core.structures.boxes import box_area

#: detectron2's clamp on the decoded log-size deltas: log(1000 / 16).
SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """detectron2's ``Box2BoxTransform``: (dx, dy, dw, dh) deltas scaled by ``weights``."""

    def __init__(self, weights: tuple[float, float, float, float]) -> None:
        self.weights = tuple(float(w) for w in weights)

    def encode(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The deltas that turn ``source`` boxes into ``target`` boxes."""
        wx, wy, ww, wh = self.weights
        src_w = source[:, 2] - source[:, 0]
        src_h = source[:, 3] - source[:, 1]
        src_x = source[:, 0] + 0.5 * src_w
        src_y = source[:, 1] + 0.5 * src_h
        tgt_w = target[:, 2] - target[:, 0]
        tgt_h = target[:, 3] - target[:, 1]
        tgt_x = target[:, 0] + 0.5 * tgt_w
        tgt_y = target[:, 1] + 0.5 * tgt_h
        return torch.stack(
            (
                wx * (tgt_x - src_x) / src_w,
                wy * (tgt_y - src_y) / src_h,
                ww * torch.log(tgt_w / src_w),
                wh * torch.log(tgt_h / src_h),
            ),
            dim=1,
        )

    def decode(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Apply (N, 4) class-agnostic ``deltas`` to ``boxes``."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0] / wx
        dy = deltas[:, 1] / wy
        dw = torch.clamp(deltas[:, 2] / ww, max=SCALE_CLAMP)
        dh = torch.clamp(deltas[:, 3] / wh, max=SCALE_CLAMP)
        x = dx * widths + ctr_x
        y = dy * heights + ctr_y
        w = torch.exp(dw) * widths
        h = torch.exp(dh) * heights
        return torch.stack((x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h), dim=1)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU, 0 where boxes do not overlap (detectron2's: unlike ``box_iou`` it gives 0,
    not NaN, for two identical empty boxes)."""
    width_height = torch.min(a[:, None, 2:], b[:, 2:]) - torch.max(a[:, None, :2], b[:, :2])
    width_height.clamp_(min=0)
    inter = width_height.prod(dim=2)
    union = box_area(a)[:, None] + box_area(b) - inter
    return torch.where(inter > 0, inter / union, torch.zeros(1, dtype=inter.dtype))


def clip_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Each coordinate clamped into the (height, width) image."""
    h, w = image_size
    x1 = boxes[:, 0].clamp(min=0, max=w)
    y1 = boxes[:, 1].clamp(min=0, max=h)
    x2 = boxes[:, 2].clamp(min=0, max=w)
    y2 = boxes[:, 3].clamp(min=0, max=h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Boxes with both sides longer than ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def per_class_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Indices kept by NMS within each class, by decreasing score: torchvision's
    ``batched_nms`` result, without its pass over all boxes for every class.

    Candidates are grouped by class once (in index order, as ``batched_nms`` sees them);
    a class with one candidate keeps it without running NMS.
    """
    from torchvision.ops import nms

    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(classes, stable=True)
    counts = torch.bincount(classes[order]).tolist()
    keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for group in order.split([c for c in counts if c]):
        if len(group) == 1:
            keep[group] = True
        else:
            keep[group[nms(boxes[group], scores[group], threshold)]] = True
    kept = torch.nonzero(keep).squeeze(1)
    return kept[scores[kept].sort(descending=True)[1]]
