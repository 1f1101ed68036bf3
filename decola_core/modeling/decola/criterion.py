"""Losses of DECOLA (spec §2): focal classification, L1 and GIoU box terms, deep supervision and
the first-stage loss, in class mode (per-prompt) and object mode (federated class subset).

The returned dict holds weighted terms ``loss_ce``, ``loss_bbox``, ``loss_giou`` for the last
decoder layer, ``..._<i>`` for auxiliary layer i and ``..._enc`` for the first stage, each with a
``..._weak_data`` twin (the term lands in the twin on image-labelled batches, so every rank
reports the same keys). ``class_error`` is a metric (no gradient) and is not part of the loss.
"""

from __future__ import annotations

import torch

from decola_core.modeling.criterion import (
    METRIC_KEYS,
    SetCriterion,
    Targets,
    count_boxes,
    flat_indices,
    sample_federated_classes,
    sigmoid_focal_loss,
)
from decola_core.modeling.detector import DetectorOutput
from decola_core.modeling.matcher import Match


class DecolaCriterion(SetCriterion):
    """Computes the weighted loss dict for class-mode or object-mode outputs."""

    def __init__(
        self,
        *,
        enc_loss_per_prompt_topk: int = 10000,
        loss_only_within_image: bool = False,
        no_box_loss_for_pseudo_labels: bool = False,
        **weights,
    ) -> None:
        super().__init__(**weights)
        self.enc_topk = enc_loss_per_prompt_topk
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
        batch_idx, query_idx = flat_indices(matches, logits.device)
        onehot[batch_idx, query_idx, 0] = 1.0
        mask = None
        if self.loss_only_within_image:
            mask = torch.stack([torch.isin(prompts[b], t["labels"]) for b, t in enumerate(targets)])
            mask = mask[..., None].to(logits.dtype)
        loss_ce = sigmoid_focal_loss(logits, onehot, num_boxes, self.focal_alpha, mask=mask)
        loss_ce = loss_ce * logits.shape[1]
        return {"loss_ce": loss_ce, **self._box_terms(boxes, matches, targets, num_boxes)}

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
