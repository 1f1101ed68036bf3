"""CenterNet2's cascade ROI heads with Detic's zero-shot classifier (spec centernet2.md §5-6):
three box stages (IoU 0.6/0.7/0.8), federated sigmoid losses, the image-label max-size loss,
score averaging at test and the class-agnostic mask head."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from decola_core.config.schema import RoIHeadsConfig
from decola_core.errors import ConfigError
from decola_core.modeling.centernet2.boxes import (
    BoxCoder,
    clip_boxes,
    nonempty,
    pairwise_iou,
    per_class_nms,
)
from decola_core.modeling.centernet2.fpn import c2_xavier_fill
from decola_core.modeling.centernet2.masks import MaskHead, polygon_mask_targets
from decola_core.modeling.classifier import check_embedding_dim
from decola_core.modeling.criterion import sample_federated_classes
from decola_core.modeling.ops.roi_align import roi_align
from decola_core.structures.boxes import box_area

#: The objectness logit given to ground-truth boxes appended to the proposals.
GT_LOGIT = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))


@dataclass
class RoIs:
    """One image's boxes at one cascade stage, with their training labels when known."""

    boxes: torch.Tensor  # (n, 4) XYXY fed pixels
    objectness: torch.Tensor  # (n,) carried along (CenterNet score or the GT logit)
    image_size: tuple[int, int]
    gt_classes: torch.Tensor | None = None  # (n,) background = num_classes
    gt_boxes: torch.Tensor | None = None  # (n, 4)
    gt_index: torch.Tensor | None = None  # (n,) matched ground-truth row

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class GroundTruth:
    """One training image's boxes, classes, optional polygons and image-level labels."""

    boxes: torch.Tensor  # (G, 4) XYXY fed pixels
    classes: torch.Tensor  # (G,)
    polygons: list[list[np.ndarray]] | None = None  # per instance: flat x, y arrays
    image_labels: list[int] = field(default_factory=list)


@dataclass
class StageOutput:
    """What one cascade stage computed (kept for the losses, the test and for inspection)."""

    rois: list[RoIs]
    logits: torch.Tensor  # (R, C + 1)
    deltas: torch.Tensor  # (R, 4)
    boxes: list[torch.Tensor]  # decoded per image


@dataclass
class RoIDetections:
    """One image's final detections in fed pixels (before rescaling to the original)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    rois: torch.Tensor  # (n,) the RoI each detection comes from (one box for all its classes)
    mask_probs: torch.Tensor | None = None  # (n, 1, 28, 28)


class Draws:
    """The random choices of a training step: the fg/bg subsample of the stage-0 RoIs and
    the federated-loss classes. Tests replace it to inject the original's draws."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def subsample(
        self, image: int, positive: torch.Tensor, negative: torch.Tensor, num_pos: int, num_neg: int
    ) -> torch.Tensor:
        """Indices of the kept RoIs: ``num_pos`` of ``positive`` then ``num_neg`` of
        ``negative``, each in random order (detectron2's ``subsample_labels``)."""
        device = positive.device
        pos = torch.randperm(positive.numel(), generator=self.generator, device=device)[:num_pos]
        neg = torch.randperm(negative.numel(), generator=self.generator, device=device)[:num_neg]
        return torch.cat([positive[pos], negative[neg]])

    def federated_classes(
        self, stage: int, labels: torch.Tensor, weight: torch.Tensor, count: int
    ) -> torch.Tensor:
        """The classes of ``labels`` (background, index C, counts as one of them) plus
        classes drawn without replacement with probability ∝ ``weight`` (C,), ``count`` in
        all (Detic's ``get_fed_loss_inds``)."""
        with_background = torch.cat([weight.float(), weight.new_zeros(1)])
        return sample_federated_classes(labels, with_background, count, self.generator)


class ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D102
        ctx.scale = scale
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return grad * ctx.scale, None


class MultiLevelRoIAlign(nn.Module):
    """detectron2's ROIPooler (ROIAlignV2): each box pooled from the level its size selects.

    Not torchvision's ``MultiScaleRoIAlign``: its level rule (``log2(s / 224) + 1e-6``, scales
    inferred from feature sizes) differs from detectron2's ``log2(s / 224 + 1e-8)`` and moves
    boxes near a level boundary to another level than the released models were trained with.
    """

    def __init__(self, output_size: int, strides: list[int]) -> None:
        super().__init__()
        self.output_size = output_size
        self.scales = [1.0 / s for s in strides]
        self.min_level = int(math.log2(strides[0]))
        self.max_level = int(math.log2(strides[-1]))

    def forward(self, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        all_boxes = torch.cat(boxes)
        channels = features[0].shape[1]
        out = features[0].new_zeros((len(all_boxes), channels, self.output_size, self.output_size))
        if len(all_boxes) == 0:
            return out
        index = torch.cat(
            [torch.full((len(b), 1), i, dtype=all_boxes.dtype, device=all_boxes.device)
             for i, b in enumerate(boxes)]
        )  # fmt: skip
        rois = torch.cat([index, all_boxes], dim=1)
        size = torch.sqrt(box_area(all_boxes))
        level = torch.floor(4 + torch.log2(size / 224 + 1e-8))
        level = torch.clamp(level, min=self.min_level, max=self.max_level).long() - self.min_level
        for i, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            inds = torch.nonzero(level == i, as_tuple=True)[0]
            if len(inds):
                pooled = roi_align(feature, rois[inds], self.output_size, scale)
                out.index_put_((inds,), pooled)
        return out


class BoxHead(nn.Module):
    """Flatten, then ``fc1`` and ``fc2`` with ReLU (detectron2's FastRCNNConvFCHead)."""

    def __init__(self, in_features: int, fc_dim: int, num_fc: int = 2) -> None:
        super().__init__()
        self.num_fc = num_fc
        for k in range(num_fc):
            fc = nn.Linear(in_features if k == 0 else fc_dim, fc_dim)
            c2_xavier_fill(fc)
            self.add_module(f"fc{k + 1}", fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, start_dim=1)
        for k in range(self.num_fc):
            x = F.relu(getattr(self, f"fc{k + 1}")(x))
        return x


class ZeroShotClassifier(nn.Module):
    """Detic's classifier: ``temperature * normalize(linear(x)) @ zs_weight`` where
    ``zs_weight`` (D, C + 1) holds normalised CLIP columns and a zero background column."""

    def __init__(self, in_features: int, embeddings: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.linear = nn.Linear(in_features, embeddings.shape[1])
        self.register_buffer("zs_weight", self._columns(embeddings))

    @staticmethod
    def _columns(embeddings: torch.Tensor) -> torch.Tensor:
        weight = embeddings.float().t()
        weight = torch.cat([weight, weight.new_zeros((weight.shape[0], 1))], dim=1)
        return F.normalize(weight, p=2, dim=0)

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        """Detect the classes of these (N, D) embeddings from now on."""
        check_embedding_dim(embeddings, self.zs_weight.shape[0])
        self.zs_weight = self._columns(embeddings).to(self.zs_weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.temperature * F.normalize(self.linear(x), p=2, dim=1)
        return torch.mm(x, self.zs_weight)


class BoxPredictor(nn.Module):
    """One stage's classifier and class-agnostic 2-layer box regressor."""

    def __init__(
        self, in_features: int, embeddings: torch.Tensor, freq_weight: torch.Tensor, temperature
    ) -> None:
        super().__init__()
        self.register_buffer("freq_weight", freq_weight.float().clone())
        self.cls_score = ZeroShotClassifier(in_features, embeddings, temperature)
        self.bbox_pred = nn.Sequential(
            nn.Linear(in_features, in_features), nn.ReLU(inplace=True), nn.Linear(in_features, 4)
        )
        c2_xavier_fill(self.bbox_pred[0])
        nn.init.normal_(self.bbox_pred[2].weight, std=0.001)
        nn.init.constant_(self.bbox_pred[2].bias, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class CascadeRoIHeads(nn.Module):
    """Three box stages and the mask head; ``forward_train`` returns the loss terms and
    ``forward_test`` the detections of each image (in fed pixels)."""

    def __init__(
        self,
        config: RoIHeadsConfig,
        *,
        channels: int,
        feature_strides: list[int],
        embeddings: torch.Tensor,
        freq_weight: torch.Tensor,
        temperature: float,
        fed_loss: tuple[bool, int],
        with_image_labels: bool,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_stages = len(config.ious)
        self.coders = [BoxCoder(tuple(w)) for w in config.box_reg_weights]
        resolution = config.pooler_resolution
        self.box_pooler = MultiLevelRoIAlign(resolution, feature_strides)
        fc_in = channels * resolution * resolution
        self.box_head = nn.ModuleList(
            BoxHead(fc_in, config.fc_dim, config.num_fc) for _ in range(self.num_stages)
        )
        self.box_predictor = nn.ModuleList(
            BoxPredictor(config.fc_dim, embeddings, freq_weight, temperature)
            for _ in range(self.num_stages)
        )
        self.mask_on = config.mask_on
        if self.mask_on:
            self.mask_pooler = MultiLevelRoIAlign(config.mask_pooler_resolution, feature_strides)
            self.mask_head = MaskHead(channels, config.mask_conv_dim, config.mask_num_conv)
        self.use_fed_loss, self.fed_loss_classes = fed_loss
        self.with_image_labels = with_image_labels

    @property
    def num_classes(self) -> int:
        return self.box_predictor[0].cls_score.zs_weight.shape[1] - 1

    # ------------------------------------------------------------------ stages
    def run_stages(self, features: list[torch.Tensor], rois: list[RoIs], *, training: bool,
                   targets: list[GroundTruth] | None = None) -> list[StageOutput]:  # fmt: skip
        """Every stage in order; stage k > 0 pools the previous stage's clipped boxes."""
        outputs: list[StageOutput] = []
        for k in range(self.num_stages):
            if k > 0:
                rois = self._next_stage_rois(outputs[-1], training)
                if targets is not None:
                    threshold = self.config.ious[k]
                    rois = [
                        self._match(r, t, threshold) for r, t in zip(rois, targets, strict=True)
                    ]
            pooled = self.box_pooler(features, [r.boxes for r in rois])
            pooled = ScaleGradient.apply(pooled, 1.0 / self.num_stages)
            logits, deltas = self.box_predictor[k](self.box_head[k](pooled))
            decoded = self.coders[k].decode(deltas, torch.cat([r.boxes for r in rois]))
            boxes = list(decoded.split([len(r) for r in rois]))
            outputs.append(StageOutput(rois, logits, deltas, boxes))
        return outputs

    @staticmethod
    def _next_stage_rois(previous: StageOutput, training: bool) -> list[RoIs]:
        rois = []
        for boxes, prev in zip(previous.boxes, previous.rois, strict=True):
            boxes = clip_boxes(boxes.detach(), prev.image_size)
            objectness = prev.objectness
            if training:
                keep = nonempty(boxes)
                boxes, objectness = boxes[keep], objectness[keep]
            rois.append(RoIs(boxes, objectness, prev.image_size))
        return rois

    def _match(self, rois: RoIs, target: GroundTruth, threshold: float) -> RoIs:
        """Label ``rois`` by their best-overlapping ground truth (fg iff IoU >= threshold)."""
        background = self.num_classes
        n = len(rois)
        if len(target.boxes) == 0 or n == 0:
            index = torch.zeros(n, dtype=torch.long, device=rois.boxes.device)
            classes = index + background
            gt_boxes = rois.boxes.new_zeros((n, 4))
        else:
            iou = pairwise_iou(target.boxes, rois.boxes)
            value, index = iou.max(dim=0)
            classes = target.classes[index].clone()
            classes[value < threshold] = background
            gt_boxes = target.boxes[index]
        rois.gt_classes, rois.gt_boxes, rois.gt_index = classes, gt_boxes, index
        return rois

    def sample_stage0(
        self, proposals: list[RoIs], targets: list[GroundTruth], draws: Draws
    ) -> list[RoIs]:
        """Proposals + ground truth, labelled at the first IoU and subsampled to
        ``batch_size_per_image`` with at most ``positive_fraction`` foreground."""
        cfg = self.config
        sampled = []
        for image, (rois, target) in enumerate(zip(proposals, targets, strict=True)):
            gt_logits = GT_LOGIT * torch.ones(len(target.boxes), device=rois.boxes.device)
            rois = RoIs(
                torch.cat([rois.boxes, target.boxes]),
                torch.cat([rois.objectness, gt_logits]),
                rois.image_size,
            )
            rois = self._match(rois, target, cfg.ious[0])
            background = self.num_classes
            positive = torch.nonzero(rois.gt_classes != background, as_tuple=True)[0]
            negative = torch.nonzero(rois.gt_classes == background, as_tuple=True)[0]
            num_pos = min(positive.numel(), int(cfg.batch_size_per_image * cfg.positive_fraction))
            num_neg = min(negative.numel(), cfg.batch_size_per_image - num_pos)
            keep = draws.subsample(image, positive, negative, num_pos, num_neg)
            has_gt = len(target.boxes) > 0
            sampled.append(
                RoIs(
                    rois.boxes[keep],
                    rois.objectness[keep],
                    rois.image_size,
                    rois.gt_classes[keep],
                    rois.gt_boxes[keep] if has_gt else None,
                    rois.gt_index[keep],
                )
            )
        return sampled

    def top_proposals(self, proposals: list[RoIs]) -> list[RoIs]:
        """Image-label batches: the first ``image_label_proposals`` proposals, clipped."""
        count = self.config.image_label_proposals
        return [
            RoIs(
                clip_boxes(r.boxes, r.image_size)[:count].detach(),
                r.objectness[:count],
                r.image_size,
            )
            for r in proposals
        ]

    # ------------------------------------------------------------------ losses
    def box_losses(self, stage: int, output: StageOutput, draws: Draws) -> dict[str, torch.Tensor]:
        """Federated sigmoid BCE over the sampled RoIs and L1 on the foreground deltas."""
        logits = output.logits
        gt_classes = torch.cat([r.gt_classes for r in output.rois])
        proposals = torch.cat([r.boxes for r in output.rois])
        gt_boxes = torch.cat(
            [r.gt_boxes if r.gt_boxes is not None else r.boxes for r in output.rois]
        )
        num_classes = logits.shape[1] - 1
        if logits.numel() == 0:
            loss_cls = logits.new_zeros([1])[0]
        else:
            rows = logits.shape[0]
            target = logits.new_zeros(rows, num_classes + 1)
            target[range(len(gt_classes)), gt_classes] = 1
            target = target[:, :num_classes]
            weight: torch.Tensor | float = 1
            if self.use_fed_loss:
                appeared = torch.unique(gt_classes)
                if len(appeared) < self.fed_loss_classes:  # the original draws only then
                    freq = self.box_predictor[stage].freq_weight
                    appeared = draws.federated_classes(
                        stage, gt_classes, freq, self.fed_loss_classes
                    )
                mask = appeared.new_zeros(num_classes + 1)
                mask[appeared] = 1
                weight = mask[:num_classes].view(1, num_classes).expand(rows, num_classes).float()
            loss = F.binary_cross_entropy_with_logits(logits[:, :-1], target, reduction="none")
            loss_cls = torch.sum(loss * weight) / rows
        fg = torch.nonzero((gt_classes >= 0) & (gt_classes < num_classes), as_tuple=True)[0]
        target_deltas = self.coders[stage].encode(proposals[fg], gt_boxes[fg])
        loss_box = torch.abs(output.deltas[fg] - target_deltas).sum()
        loss_box = loss_box / max(gt_classes.numel(), 1.0)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box}

    def image_label_losses(
        self, output: StageOutput, labels: list[list[int]], picks: list | None = None
    ) -> dict:
        """Detic's max-size loss: the largest RoI (the last one excluded, as the original)
        of each image takes BCE against each image-level label over every column."""
        logits = output.logits.split([len(r) for r in output.rois])
        loss = output.logits.new_zeros([1])[0]
        for score, image_labels, rois in zip(logits, labels, output.rois, strict=True):
            if score.shape[0] == 0:
                continue
            sizes = box_area(rois.boxes)
            index = int(sizes[:-1].argmax()) if len(sizes) > 1 else 0
            for label in image_labels:
                target = score.new_zeros(score.shape[1])
                target[label] = 1.0
                bce = F.binary_cross_entropy_with_logits(score[index], target, reduction="sum")
                loss = loss + bce / len(image_labels)
                if picks is not None:  # (label, RoI, BCE) for inspection
                    picks.append((label, index, bce.detach()))
        loss = loss / len(logits)
        zero = output.logits.new_zeros([1])[0]
        return {
            "image_loss": loss * self.config.image_loss_weight,
            "loss_cls": zero,
            "loss_box_reg": zero.clone(),
        }

    def mask_loss(
        self,
        features: list[torch.Tensor],
        rois: list[RoIs],
        targets: list[GroundTruth],
        record: dict | None = None,
    ) -> torch.Tensor:
        """BCE of the mask logits of the stage-0 foreground RoIs against their polygons."""
        background = self.num_classes
        fg_rois, fg_targets = [], []
        for r, t in zip(rois, targets, strict=True):
            fg = (r.gt_classes != -1) & (r.gt_classes != background)
            fg_rois.append(r.boxes[fg])
            if fg.any():
                polygons = [t.polygons[int(i)] for i in r.gt_index[fg]]
                size = 2 * self.config.mask_pooler_resolution  # the head upsamples 2x
                fg_targets.append(polygon_mask_targets(polygons, r.boxes[fg], size))
        logits = self.mask_head(self.mask_pooler(features, fg_rois))
        if record is not None:
            record.update(mask_rois=fg_rois, mask_logits=logits, mask_targets=fg_targets)
        if not fg_targets:
            return logits.sum() * 0
        targets_all = torch.cat(fg_targets).to(torch.float32)
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], targets_all, reduction="mean")
        return loss * self.config.mask_weight

    def forward_train(
        self,
        features: list[torch.Tensor],
        proposals: list[RoIs],
        targets: list[GroundTruth],
        *,
        ann_type: str,
        draws: Draws,
        record: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """The ROI-head loss terms of a 'box' or 'image' batch, keys as the original's."""
        box_batch = ann_type == "box"
        if not box_batch and not self.config.image_label_loss:
            raise ConfigError(
                f"an '{ann_type}' batch, but model.roi_heads.image_label_loss is '' (this recipe "
                "trains on box data only)"
            )
        if box_batch:
            rois = self.sample_stage0(proposals, targets, draws)
            outputs = self.run_stages(features, rois, training=True, targets=targets)
        else:
            rois = self.top_proposals(proposals)
            outputs = self.run_stages(features, rois, training=True)
        if record is not None:
            record["stages"] = outputs
        losses: dict[str, torch.Tensor] = {}
        for k, output in enumerate(outputs):
            if box_batch:
                stage = self.box_losses(k, output, draws)
                if self.with_image_labels:
                    stage["image_loss"] = output.logits.new_zeros([1])[0]
            else:
                picks = None
                if record is not None:
                    picks = record.setdefault("max_size", {}).setdefault(k, [])
                stage = self.image_label_losses(output, [t.image_labels for t in targets], picks)
            losses.update({f"{name}_stage{k}": v for name, v in stage.items()})
        if self.mask_on:
            if box_batch and targets[0].polygons is not None:
                losses["loss_mask"] = self.mask_loss(features, rois, targets, record)
            else:
                losses["loss_mask"] = torch.zeros((1,), device=features[0].device)[0]
        return losses

    # ------------------------------------------------------------------ test
    def forward_test(
        self,
        features: list[torch.Tensor],
        proposals: list[RoIs],
        *,
        max_detections: int,
        score_threshold: float,
        allowed_classes: list[torch.Tensor] | None = None,
        record: dict | None = None,
    ) -> list[RoIDetections]:
        """Average the stages' probabilities (times the proposal score), decode stage 2's
        boxes, per-class NMS, then masks for the kept boxes."""
        cfg = self.config
        outputs = self.run_stages(features, proposals, training=False)
        sizes = [len(r) for r in proposals]
        per_stage = [o.logits.sigmoid().split(sizes) for o in outputs]
        scores = [sum(list(s)) * (1.0 / self.num_stages) for s in zip(*per_stage, strict=True)]
        if cfg.mult_proposal_score:
            scores = [
                (s * r.objectness[:, None]) ** 0.5 for s, r in zip(scores, proposals, strict=True)
            ]
        if record is not None:
            record["stages"], record["scores"] = outputs, scores
        if allowed_classes is not None:  # the oracle protocol: only these classes per image
            scores = [_only(s, allowed) for s, allowed in zip(scores, allowed_classes, strict=True)]
        results = []
        threshold = max(cfg.score_threshold, score_threshold)
        for boxes, score, rois in zip(outputs[-1].boxes, scores, proposals, strict=True):
            results.append(
                _fast_rcnn_inference(
                    boxes, score, rois.image_size, threshold, cfg.nms_threshold, max_detections
                )
            )
        if self.mask_on:
            # Detections of one RoI share its box (regression is class-agnostic), so each
            # distinct RoI's mask is computed once and given to all its classes.
            distinct = [torch.unique(r.rois, return_inverse=True) for r in results]
            boxes = [
                r.boxes.new_zeros((len(u), 4)).index_copy_(0, inverse, r.boxes)
                for r, (u, inverse) in zip(results, distinct, strict=True)
            ]
            pooled = self.mask_pooler(features, boxes)
            probs = self.mask_head(pooled).sigmoid().split([len(b) for b in boxes])
            for result, prob, (_, inverse) in zip(results, probs, distinct, strict=True):
                result.mask_probs = prob[inverse]
        return results


def _only(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    keep[allowed.to(scores.device)] = True
    keep[-1] = True  # the background column is dropped later anyway
    return scores * keep


def _fast_rcnn_inference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float,
    nms_threshold: float,
    topk: int,
) -> RoIDetections:
    """detectron2's ``fast_rcnn_inference_single_image`` for class-agnostic boxes."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not valid.all():
        boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]
    boxes = clip_boxes(boxes, image_size)
    keep_mask = scores > score_threshold
    index = keep_mask.nonzero()
    boxes = boxes[index[:, 0]]
    scores = scores[keep_mask]
    keep = per_class_nms(boxes.float(), scores, index[:, 1], nms_threshold)
    if topk >= 0:
        keep = keep[:topk]
    return RoIDetections(boxes[keep], scores[keep], index[keep, 1], index[keep, 0])
