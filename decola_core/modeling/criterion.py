"""Losses of DECOLA (spec §2): focal classification, L1 and GIoU box terms, deep supervision and
the first-stage loss, in class mode (per-prompt) and object mode (federated class subset).

The returned dict holds weighted terms ``loss_ce``, ``loss_bbox``, ``loss_giou`` for the last
decoder layer, ``..._<i>`` for auxiliary layer i and ``..._enc`` for the first stage, each with a
``..._weak_data`` twin (the term lands in the twin on image-labelled batches, so every rank
reports the same keys). ``class_error`` is a metric (no gradient) and is not part of the loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F

from decola_core.modeling.detector import DetectorOutput
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
    total = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        total = total / dist.get_world_size()
    return max(total.item(), 1.0)


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


class DecolaCriterion:
    """Computes the weighted loss dict for class-mode or object-mode outputs."""

    def __init__(
        self,
        *,
        class_weight: float = 2.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        enc_loss_per_prompt_topk: int = 10000,
        use_fed_loss: bool = True,
        fed_loss_num_classes: int = 50,
        loss_only_within_image: bool = False,
        no_box_loss_for_pseudo_labels: bool = False,
        fed_loss_weight: torch.Tensor | None = None,
    ) -> None:
        self.fed_loss_weight = fed_loss_weight
        self.matcher = HungarianMatcher(class_weight, bbox_weight, giou_weight)
        self.weights = {"loss_ce": class_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}
        self.enc_topk = enc_loss_per_prompt_topk
        self.use_fed_loss = use_fed_loss
        self.fed_loss_num_classes = fed_loss_num_classes
        self.loss_only_within_image = loss_only_within_image
        self.no_box_loss_for_pseudo_labels = no_box_loss_for_pseudo_labels

    # ---- public -----------------------------------------------------------------------------

    def __call__(
        self,
        out: DetectorOutput,
        targets: Targets,
        *,
        weak: bool = False,
        class_subset: torch.Tensor | None = None,
        record_matches: list[list[Match]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for ``out`` against ``targets``.

        ``class_subset`` (object mode) fixes the federated class subset; by default it is
        sampled from the GT classes and the classifier's frequency weights (all classes on
        image-labelled batches). ``weak`` routes every term into its ``_weak_data`` twin.
        """
        device = out.pred_boxes.device
        num_boxes = count_boxes(targets, device)
        class_mode = out.prompt_inds is not None
        layers = [(out.pred_logits, out.pred_boxes, out.prompt_inds)] + [
            (a["pred_logits"], a["pred_boxes"], out.prompt_inds) for a in out.aux
        ]
        suffixes = [""] + [f"_{i}" for i in range(len(out.aux))]
        raw: dict[str, torch.Tensor] = {}
        if not class_mode and class_subset is None:
            class_subset = self._class_subset(out, targets, weak)
        for (logits, boxes, prompts), suffix in zip(layers, suffixes, strict=True):
            terms = (
                self._class_mode_terms(logits, boxes, prompts, targets, num_boxes, record_matches)
                if class_mode
                else self._object_mode_terms(
                    logits,
                    boxes,
                    targets,
                    num_boxes,
                    class_subset,
                    record_matches,
                    with_error=suffix == "",
                )
            )
            raw.update({f"{k}{suffix}" if k in self.weights else k: v for k, v in terms.items()})
        enc = self._first_stage_terms(out, targets, num_boxes, record_matches)
        raw.update({f"{k}_enc": v for k, v in enc.items()})
        return self._weighted(raw, weak, class_mode, out)

    # ---- terms ------------------------------------------------------------------------------

    def _class_mode_terms(self, logits, boxes, prompts, targets, num_boxes, record):
        matches = self.matcher.match_per_prompt(logits, boxes, prompts, targets)
        if record is not None:
            record.append(matches)
        onehot = torch.zeros_like(logits)
        batch_idx, query_idx = _flat_indices(matches, logits.device)
        onehot[batch_idx, query_idx, 0] = 1.0
        mask = None
        if self.loss_only_within_image:
            mask = torch.stack([torch.isin(prompts[b], t["labels"]) for b, t in enumerate(targets)])
            mask = mask[..., None].to(logits.dtype)
        loss_ce = sigmoid_focal_loss(logits, onehot, num_boxes, mask=mask) * logits.shape[1]
        return {"loss_ce": loss_ce, **self._box_terms(boxes, matches, targets, num_boxes)}

    def _object_mode_terms(
        self, logits, boxes, targets, num_boxes, class_subset, record, with_error: bool
    ):
        matches = self.matcher.match_all_classes(logits, boxes, targets)
        if record is not None:
            record.append(matches)
        batch_idx, query_idx = _flat_indices(matches, logits.device)
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
            loss_ce = sigmoid_focal_loss(logits[:, :, subset], onehot[:, :, subset], num_boxes)
        else:
            loss_ce = sigmoid_focal_loss(logits, onehot, num_boxes)
        terms = {
            "loss_ce": loss_ce * logits.shape[1],
            **self._box_terms(boxes, matches, targets, num_boxes),
        }
        if with_error:
            terms["class_error"] = _class_error(logits[batch_idx, query_idx], target_classes)
        return terms

    def _first_stage_terms(self, out: DetectorOutput, targets, num_boxes, record):
        first = out.transformer.first_stage
        boxes_all = first.box_logits.sigmoid()
        if first.prompt_ids is None:  # object mode: class-agnostic binary loss over all tokens
            binary = [
                {"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets
            ]
            terms = self._object_mode_terms(
                first.logits, boxes_all, binary, num_boxes, None, record, with_error=False
            )
            return terms
        logits, prompt_ids = first.logits, first.prompt_ids  # (B, S, K), (B, K)
        batch, tokens, num_prompts = logits.shape
        top = min(self.enc_topk, tokens) if self.enc_topk > 0 else tokens
        inds = torch.topk(logits, top, dim=1)[1]  # (B, T, K)
        sel_logits = torch.gather(logits, 1, inds).reshape(batch, top * num_prompts, 1)
        flat = inds.reshape(batch, top * num_prompts)
        sel_boxes = torch.gather(boxes_all, 1, flat.unsqueeze(-1).expand(-1, -1, 4))
        prompts = prompt_ids[:, None, :].expand(batch, top, num_prompts).reshape(batch, -1)
        return self._class_mode_terms(sel_logits, sel_boxes, prompts, targets, num_boxes, record)

    def _box_terms(self, boxes, matches: list[Match], targets, num_boxes):
        batch_idx, query_idx = _flat_indices(matches, boxes.device)
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

    # ---- bookkeeping ------------------------------------------------------------------------

    def _class_subset(
        self, out: DetectorOutput, targets: Targets, weak: bool
    ) -> torch.Tensor | None:
        if weak or not self.use_fed_loss or self.fed_loss_weight is None:
            return None  # all classes
        labels = torch.cat([t["labels"] for t in targets]).to(out.pred_logits.device)
        weight = self.fed_loss_weight.to(labels.device)
        return sample_federated_classes(labels, weight, self.fed_loss_num_classes)

    def _weighted(
        self, raw: dict[str, torch.Tensor], weak: bool, class_mode: bool, out: DetectorOutput
    ) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        for key, value in raw.items():
            if key in METRIC_KEYS:
                result[key] = value
                continue
            base = key.split("_")[0] + "_" + key.split("_")[1]  # loss_ce / loss_bbox / loss_giou
            weight = self.weights[base]
            if weak and self.no_box_loss_for_pseudo_labels and base != "loss_ce":
                weight = 0.0
            weighted = value * weight
            result[key] = weighted * 0.0 if weak else weighted
            result[f"{key}_weak_data"] = weighted if weak else weighted * 0.0
        if class_mode:
            # Keeps every box parameter in the graph (DDP without find_unused_parameters).
            result["loss_zero"] = 0.0 * out.pred_boxes.sum()
        return result


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The scalar to back-propagate: every term except the metrics (the original also summed
    ``class_error``, which has no gradient)."""
    return sum(v for k, v in losses.items() if k not in METRIC_KEYS)


def _flat_indices(matches: list[Match], device) -> tuple[torch.Tensor, torch.Tensor]:
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(matches)])
    query_idx = torch.cat([src for src, _ in matches])
    return batch_idx.to(device), query_idx.to(device)


@torch.no_grad()
def _class_error(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.numel() == 0:
        return torch.tensor(100.0, device=logits.device)
    correct = (logits.argmax(-1) == labels.to(logits.device)).float().mean() * 100
    return 100.0 - correct


class BaselineCriterion(DecolaCriterion):
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
