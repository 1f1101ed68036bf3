"""Pseudo boxes from a frozen phase-1 model: at most one box per image-level label (spec §2.7,
§4.5). Used online (phase 2 teacher) and offline (``decola self-label``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from decola_core.errors import InputError
from decola_core.modeling.build import build_model
from decola_core.modeling.checkpoint import load_weights
from decola_core.modeling.postprocess import PseudoBoxes

if TYPE_CHECKING:  # annotations only
    from decola_core.modeling.detector import DetectorOutput
    from decola_core.modeling.interface import DetectionModel

MIN_SIDE = 1e-5  # boxes thinner than this (normalised) are dropped, as in the original


def select_pseudo_boxes(
    out: DetectorOutput,
    image_labels: list[torch.Tensor],
    *,
    choice: str = "max-score",
    min_area: float = 0.0,
) -> list[PseudoBoxes]:
    """For each image and each of its labels, the best query of that label's prompt.

    ``choice`` is ``max-score`` (highest logit) or ``max-size`` (largest normalised area);
    candidates with area not above ``min_area`` are ignored when ``min_area`` > 0.
    """
    if out.prompt_inds is None:
        raise InputError("pseudo-labelling needs class-mode outputs (prompt ids)")
    if choice not in ("max-score", "max-size"):
        raise InputError(f"choice must be max-score or max-size (got {choice!r})")
    results = []
    for b, labels in enumerate(image_labels):
        kept_labels, kept_boxes, kept_scores = [], [], []
        for label in torch.unique(labels.to(out.prompt_inds.device)):
            candidates = torch.nonzero(out.prompt_inds[b] == label).squeeze(1)
            boxes = out.pred_boxes[b, candidates]
            area = boxes[:, 2] * boxes[:, 3]
            if min_area > 0:
                keep = area > min_area
                candidates, boxes, area = candidates[keep], boxes[keep], area[keep]
            if candidates.numel() == 0:
                continue
            logits = out.pred_logits[b, candidates, 0]
            best = int(torch.argmax(logits if choice == "max-score" else area))
            box = boxes[best]
            if box[2] > MIN_SIDE and box[3] > MIN_SIDE:
                kept_labels.append(label)
                kept_boxes.append(box)
                kept_scores.append(logits[best].sigmoid())
        if kept_labels:
            results.append(
                PseudoBoxes(
                    torch.stack(kept_labels), torch.stack(kept_boxes), torch.stack(kept_scores)
                )
            )
        else:
            results.append(_no_boxes(out.pred_boxes.device))
    return results


class Teacher:
    """A frozen copy of a phase-1 model that labels image-labelled batches (the family's
    :meth:`~decola_core.modeling.interface.DetectionModel.pseudo_label`).

    It is deliberately not an ``nn.Module`` attribute of the student: it is never saved in the
    student's checkpoints and is rebuilt from the phase-1 weights on resume.
    """

    def __init__(
        self,
        model: DetectionModel,
        *,
        choice: str = "max-score",
        min_area: float = 0.0,
        per_prompt_topk: int = 300,
    ) -> None:
        self.model = model.frozen_teacher(per_prompt_topk=per_prompt_topk)
        self.choice, self.min_area = choice, min_area

    @classmethod
    def from_weights(
        cls, recipe, weights, *, data_root="datasets", trusted=False, allow_embedding_mismatch=False
    ) -> Teacher:
        """The teacher of a phase-2 ``recipe``: its network with the phase-1 ``weights``
        (called again on resume, so the teacher never drifts to phase-2 weights)."""
        model = build_model(recipe, data_root=data_root)
        load_weights(
            model, weights, trusted=trusted, allow_embedding_mismatch=allow_embedding_mismatch
        )
        d = recipe.model.decola
        return cls(model, choice=d.pseudo_box_choice, min_area=d.pseudo_min_area)

    @torch.no_grad()
    def __call__(
        self, images: list[torch.Tensor], image_labels: list[torch.Tensor]
    ) -> list[PseudoBoxes]:
        """Pseudo boxes for ``images``, prompted with the union of their labels."""
        if not any(lab.numel() for lab in image_labels):
            return [_no_boxes(self.model.device) for _ in images]
        return self.model.pseudo_label(
            images, image_labels, choice=self.choice, min_area=self.min_area
        )


def _no_boxes(device: torch.device) -> PseudoBoxes:
    return PseudoBoxes(
        torch.zeros(0, dtype=torch.int64, device=device),
        torch.zeros(0, 4, device=device),
        torch.zeros(0, device=device),
    )
