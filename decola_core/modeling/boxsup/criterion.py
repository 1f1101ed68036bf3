"""Losses of the BoxSup/Detic baseline (spec §3.2-3.3): object-mode set losses with a federated
class subset per layer, and Detic's max-size image-label loss."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from decola_core.modeling.criterion import (
    METRIC_KEYS,
    SetCriterion,
    Targets,
    count_boxes,
    sample_federated_classes,
)
from decola_core.modeling.detector import DetectorOutput
from decola_core.modeling.matcher import Match


class BaselineCriterion(SetCriterion):
    """Losses of the BoxSup/Detic baseline (spec §3.2-3.3).

    Object-mode terms with a federated class subset re-sampled for every layer and for the
    first stage (whose targets are all class 0, an objectness channel); on image-labelled
    batches, Detic's max-size loss ``loss_image`` (weight ``weak_weight``) is added.
    """

    def __init__(self, *, weak_weight: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.weak_weight = weak_weight

    def __call__(
        self,
        out: DetectorOutput,
        targets: Targets,
        *,
        image_labels: list[torch.Tensor] | None = None,
        record_matches: list[list[Match]] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        device = out.pred_boxes.device
        num_boxes = count_boxes(targets, device)
        labels = torch.cat([t["labels"] for t in targets]).to(device)
        layers = [(out.pred_logits, out.pred_boxes)] + [
            (a["pred_logits"], a["pred_boxes"]) for a in out.aux
        ]
        suffixes = [""] + [f"_{i}" for i in range(len(out.aux))]
        raw: dict[str, torch.Tensor] = {}
        for (logits, boxes), suffix in zip(layers, suffixes, strict=True):
            subset = self._subset(labels, generator)
            terms = self._object_mode_terms(
                logits, boxes, targets, num_boxes, subset, record_matches, with_error=suffix == ""
            )
            raw.update({f"{k}{suffix}" if k in self.weights else k: v for k, v in terms.items()})
        first = out.transformer.first_stage
        binary = [{"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets]
        subset = self._subset(torch.zeros_like(labels), generator)
        enc = self._object_mode_terms(
            first.logits,
            first.box_logits.sigmoid(),
            binary,
            num_boxes,
            subset,
            record_matches,
            with_error=False,
        )
        raw.update({f"{k}_enc": v for k, v in enc.items()})
        result = {
            k: (v if k in METRIC_KEYS else v * self.weights["_".join(k.split("_")[:2])])
            for k, v in raw.items()
        }
        result["loss_image"] = (
            self.weak_weight * max_size_loss(layers, image_labels)
            if image_labels is not None
            else out.pred_boxes.sum() * 0.0
        )
        return result

    def _subset(self, labels: torch.Tensor, generator) -> torch.Tensor | None:
        if not self.use_fed_loss or self.fed_loss_weight is None:
            return None
        weight = self.fed_loss_weight.to(labels.device)
        return sample_federated_classes(labels, weight, self.fed_loss_num_classes, generator)


def max_size_loss(
    layers: list[tuple[torch.Tensor, torch.Tensor]], image_labels: list[torch.Tensor]
) -> torch.Tensor:
    """Detic's image-label loss: in every layer, the query with the largest box is pushed to
    each image label (BCE summed over classes), averaged over labels and images."""
    total = layers[0][0].sum() * 0.0
    for logits, boxes in layers:
        biggest = (boxes[..., 2] * boxes[..., 3]).argmax(dim=1)  # (B,)
        for b, labels in enumerate(image_labels):
            labels = torch.unique(labels)
            if labels.numel() == 0:
                continue
            row = logits[b, biggest[b]]
            targets = F.one_hot(labels.to(row.device), row.shape[-1]).to(row.dtype)
            bce = F.binary_cross_entropy_with_logits(
                row.expand_as(targets), targets, reduction="sum"
            )
            total = total + bce / labels.numel()
    return total / len(image_labels)
