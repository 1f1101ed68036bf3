"""Hungarian matching of queries to ground-truth boxes (spec §2.2 and §2.6).

Costs: focal classification cost (alpha 0.25 by default, gamma 2), L1 on cxcywh boxes, negative
GIoU.
The prompt-aware matcher (class mode) only pairs a query with boxes of its own prompt's class.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from decola_core.structures.boxes import box_cxcywh_to_xyxy, generalized_box_iou

ALPHA, GAMMA = 0.25, 2.0

Match = tuple[torch.Tensor, torch.Tensor]  # (query indices, target indices), int64


def focal_cost(prob: torch.Tensor, alpha: float = ALPHA, gamma: float = GAMMA) -> torch.Tensor:
    """Classification cost of predicting probability ``prob`` for the target class."""
    neg = (1 - alpha) * (prob**gamma) * (-(1 - prob + 1e-8).log())
    pos = alpha * ((1 - prob) ** gamma) * (-(prob + 1e-8).log())
    return pos - neg


class HungarianMatcher:
    """Weights of the classification, L1 and GIoU costs (2, 5, 2 in every recipe) and the
    focal cost's alpha (``model.loss.focal_alpha``)."""

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = ALPHA,
    ):
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha = alpha

    def _box_costs(self, pred_boxes: torch.Tensor, tgt_boxes: torch.Tensor) -> torch.Tensor:
        cost_bbox = torch.cdist(pred_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(
            box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes)
        )
        return self.cost_bbox * cost_bbox + self.cost_giou * cost_giou

    @torch.no_grad()
    def match_all_classes(self, pred_logits, pred_boxes, targets) -> list[Match]:
        """Object mode: logits (B, Q, C); one assignment per image over all its boxes."""

        def match(b: int, labels: torch.Tensor, cost: torch.Tensor) -> Match:
            prob = pred_logits[b].float().sigmoid()
            rows, cols = linear_sum_assignment(
                (self.cost_class * focal_cost(prob, self.alpha)[:, labels] + cost).cpu().numpy()
            )
            return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(
                cols, dtype=torch.int64
            )

        return self._per_image(pred_boxes, targets, match)

    @torch.no_grad()
    def match_per_prompt(self, pred_logits, pred_boxes, prompt_inds, targets) -> list[Match]:
        """Class mode: logits (B, Q, 1) for each query's own prompt ``prompt_inds`` (B, Q);
        queries are matched only to boxes of their prompt's class, one assignment per class."""

        def match(b: int, labels: torch.Tensor, cost: torch.Tensor) -> Match:
            prob = pred_logits[b, :, 0].float().sigmoid()
            cost = self.cost_class * focal_cost(prob, self.alpha)[:, None] + cost
            rows_all, cols_all = [], []
            for cls in torch.unique(labels):
                query_ids = torch.nonzero(prompt_inds[b] == cls).squeeze(1)
                target_ids = torch.nonzero(labels == cls).squeeze(1)
                if query_ids.numel() == 0:
                    continue
                rows, cols = linear_sum_assignment(cost[query_ids][:, target_ids].cpu().numpy())
                rows_all.append(query_ids.cpu()[rows])
                cols_all.append(target_ids.cpu()[cols])
            return (torch.cat(rows_all), torch.cat(cols_all)) if rows_all else _empty_match()

        return self._per_image(pred_boxes, targets, match)

    def _per_image(self, pred_boxes, targets, match) -> list[Match]:
        """``match(b, labels, box_cost)`` for every image with boxes; empty matches otherwise."""
        matches = []
        for b, target in enumerate(targets):
            labels, boxes = target["labels"], target["boxes"]
            if labels.numel() == 0:
                matches.append(_empty_match())
            else:
                matches.append(match(b, labels, self._box_costs(pred_boxes[b].float(), boxes)))
        return matches


def _empty_match() -> Match:
    return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
