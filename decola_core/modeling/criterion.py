"""What the set-prediction (DETR) criteria share: focal classification, L1 and GIoU box terms on
Hungarian matches, the federated class subset and the loss normaliser. Each DETR family's own
criterion (``decola/criterion.py``, ``boxsup/criterion.py``) builds on :class:`SetCriterion`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from decola_core.config.schema import LossConfig
from decola_core.engine.distributed import mean_over_ranks
from decola_core.modeling.matcher import ALPHA, GAMMA, HungarianMatcher, Match
from decola_core.structures.boxes import box_cxcywh_to_xyxy, generalized_box_iou

Targets = list[dict[str, torch.Tensor]]  # {"labels": (G,), "boxes": (G, 4) cxcywh normalised}
METRIC_KEYS = ("class_error",)


def sigmoid_focal_loss(
    inputs,
    targets,
    num_boxes: float,
    alpha: float = ALPHA,
    gamma: float = GAMMA,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable DETR's focal loss: mean over queries, sum over the rest, / num_boxes."""
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if mask is not None:
        loss = loss * mask
    return loss.mean(1).sum() / num_boxes


def count_boxes(targets: Targets, device: torch.device) -> float:
    """Boxes in the batch, averaged over ranks, at least 1 (the loss normaliser)."""
    return max(mean_over_ranks(sum(len(t["labels"]) for t in targets), device), 1.0)


def sample_federated_classes(
    labels: torch.Tensor,
    weight: torch.Tensor,
    num_sample: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The GT classes plus classes drawn without replacement with probability ∝ ``weight``,
    up to ``num_sample`` classes in all (Detic's federated loss subset)."""
    present = torch.unique(labels)
    prob = weight.float().clone()
    prob[present] = 0
    extra = min(num_sample - len(present), int((prob > 0).sum()))
    if extra <= 0:
        return present
    drawn = torch.multinomial(prob, extra, replacement=False, generator=generator)
    return torch.cat([present, drawn.to(present.device)])


class SetCriterion:
    """Loss weights, the matcher and the object-mode (all classes) terms of a DETR criterion."""

    @staticmethod
    def options(loss: LossConfig) -> dict:
        """The constructor arguments a recipe's ``model.loss`` gives every DETR criterion."""
        return {
            "class_weight": loss.class_weight,
            "bbox_weight": loss.bbox_l1_weight,
            "giou_weight": loss.giou_weight,
            "focal_alpha": loss.focal_alpha,
            "use_fed_loss": loss.use_fed_loss,
            "fed_loss_num_classes": loss.fed_loss_num_classes,
        }

    def __init__(
        self,
        *,
        class_weight: float = 2.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        focal_alpha: float = ALPHA,
        use_fed_loss: bool = True,
        fed_loss_num_classes: int = 50,
        fed_loss_weight: torch.Tensor | None = None,
    ) -> None:
        self.fed_loss_weight = fed_loss_weight
        self.focal_alpha = focal_alpha
        self.matcher = HungarianMatcher(class_weight, bbox_weight, giou_weight, alpha=focal_alpha)
        self.weights = {"loss_ce": class_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}
        self.use_fed_loss = use_fed_loss
        self.fed_loss_num_classes = fed_loss_num_classes

    def _object_mode_terms(
        self, logits, boxes, targets, num_boxes, class_subset, record, with_error: bool
    ):
        matches = self.matcher.match_all_classes(logits, boxes, targets)
        if record is not None:
            record.append(matches)
        batch_idx, query_idx = flat_indices(matches, logits.device)
        target_classes = torch.cat(
            [
                t["labels"][j.to(t["labels"].device)]
                for t, (_, j) in zip(targets, matches, strict=True)
            ]
        )
        onehot = torch.zeros_like(logits)
        onehot[batch_idx, query_idx, target_classes.to(logits.device)] = 1.0
        if class_subset is not None:
            subset = class_subset.to(logits.device)
            loss_ce = sigmoid_focal_loss(
                logits[:, :, subset], onehot[:, :, subset], num_boxes, self.focal_alpha
            )
        else:
            loss_ce = sigmoid_focal_loss(logits, onehot, num_boxes, self.focal_alpha)
        terms = {
            "loss_ce": loss_ce * logits.shape[1],
            **self._box_terms(boxes, matches, targets, num_boxes),
        }
        if with_error:
            terms["class_error"] = _class_error(logits[batch_idx, query_idx], target_classes)
        return terms

    def _box_terms(self, boxes, matches: list[Match], targets, num_boxes):
        batch_idx, query_idx = flat_indices(matches, boxes.device)
        if query_idx.numel() == 0:
            zero = boxes.sum() * 0.0
            return {"loss_bbox": zero, "loss_giou": zero}
        src = boxes[batch_idx, query_idx]
        tgt = torch.cat(
            [
                t["boxes"][j.to(t["boxes"].device)]
                for t, (_, j) in zip(targets, matches, strict=True)
            ]
        ).to(src)
        loss_bbox = F.l1_loss(src, tgt, reduction="none").sum() / num_boxes
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)))
        return {"loss_bbox": loss_bbox, "loss_giou": (1 - giou).sum() / num_boxes}


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The scalar to back-propagate: every term except the metrics (the original also summed
    ``class_error``, which has no gradient)."""
    return sum(v for k, v in losses.items() if k not in METRIC_KEYS)


def flat_indices(matches: list[Match], device) -> tuple[torch.Tensor, torch.Tensor]:
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(matches)])
    query_idx = torch.cat([src for src, _ in matches])
    return batch_idx.to(device), query_idx.to(device)


@torch.no_grad()
def _class_error(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.numel() == 0:
        return torch.tensor(100.0, device=logits.device)
    correct = (logits.argmax(-1) == labels.to(logits.device)).float().mean() * 100
    return 100.0 - correct
