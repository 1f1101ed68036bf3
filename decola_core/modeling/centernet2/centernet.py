"""CenterNet as CenterNet2's class-agnostic proposal generator (spec centernet2.md §4).

One shared head over P3-P7 predicts an objectness heatmap and (l, t, r, b) box distances per
location; training targets are Gaussian heatmaps and GIoU regression around each box centre;
proposals are the heatmap peaks after one class-agnostic NMS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms

from decola_core.config.schema import CenterNetConfig
from decola_core.engine.distributed import mean_over_ranks

#: "Infinity" of the original's target code (no box / no target).
INF = 100000000


@dataclass
class Proposals:
    """One image's proposals: boxes (N, 4) XYXY in fed pixels, scores (N,) = sqrt(sigmoid)."""

    boxes: torch.Tensor
    scores: torch.Tensor


@dataclass
class CenterNetOutputs:
    """Per-level raw head outputs: heatmap logits (B, 1, H, W), distances (B, 4, H, W) in
    units of the level's stride (after Scale and ReLU)."""

    heatmaps: list[torch.Tensor]
    distances: list[torch.Tensor]


@dataclass
class CenterNetTargets:
    """Training targets over all locations, flattened level-major then image, y, x."""

    positive: torch.Tensor  # (P,) flat indices of the box centres (with repeats)
    labels: torch.Tensor  # (P,) their classes
    distances: torch.Tensor  # (M, 4) ltrb / stride; -INF / stride where no target
    heatmap: torch.Tensor  # (M, 1)


class Scale(nn.Module):
    """A learned scalar factor."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([value], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class CenterNetHead(nn.Module):
    """The box tower (conv-GN-ReLU x N), the distance regressor and the agnostic heatmap."""

    def __init__(
        self, channels: int, num_levels: int, num_convs: int = 4, prior_prob: float = 0.01
    ) -> None:
        super().__init__()
        groups = 32 if channels % 32 == 0 else 25  # the original's fallback
        tower: list[nn.Module] = []
        for _ in range(num_convs):
            tower += [
                nn.Conv2d(channels, channels, 3, 1, 1),
                nn.GroupNorm(groups, channels),
                nn.ReLU(),
            ]
        self.bbox_tower = nn.Sequential(*tower)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, 1, 1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        self.agn_hm = nn.Conv2d(channels, 1, 3, 1, 1)
        for module in (*self.bbox_tower, self.bbox_pred):
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 8.0)
        nn.init.normal_(self.agn_hm.weight, std=0.01)
        nn.init.constant_(self.agn_hm.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]) -> CenterNetOutputs:
        heatmaps, distances = [], []
        for level, feature in enumerate(features):
            tower = self.bbox_tower(feature)
            heatmaps.append(self.agn_hm(tower))
            distances.append(F.relu(self.scales[level](self.bbox_pred(tower))))
        return CenterNetOutputs(heatmaps, distances)


def location_grids(features: list[torch.Tensor], strides: list[int]) -> list[torch.Tensor]:
    """(H*W, 2) cell-centre coordinates (x fastest) of every level."""
    grids = []
    for feature, stride in zip(features, strides, strict=True):
        h, w = feature.shape[-2:]
        xs = torch.arange(0, w * stride, step=stride, dtype=torch.float32, device=feature.device)
        ys = torch.arange(0, h * stride, step=stride, dtype=torch.float32, device=feature.device)
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        grids.append(torch.stack((x.reshape(-1), y.reshape(-1)), dim=1) + stride // 2)
    return grids


def _flatten(per_level: list[torch.Tensor], channels: int) -> torch.Tensor:
    return torch.cat([x.permute(0, 2, 3, 1).reshape(-1, channels) for x in per_level])


class CenterNet(nn.Module):
    """The proposal generator: head, targets and losses (training), proposals (always)."""

    def __init__(self, config: CenterNetConfig, channels: int) -> None:
        super().__init__()
        self.config = config
        self.strides = list(config.strides)
        self.centernet_head = CenterNetHead(
            channels, len(self.strides), config.num_box_convs, config.prior_prob
        )
        self.delta = (1 - config.hm_min_overlap) / (1 + config.hm_min_overlap)

    def forward(self, features: list[torch.Tensor]) -> CenterNetOutputs:
        return self.centernet_head(features)

    # ------------------------------------------------------------------ targets
    def targets(
        self, outputs: CenterNetOutputs, boxes: list[torch.Tensor], classes: list[torch.Tensor]
    ) -> CenterNetTargets:
        """Heatmap, regression and positive-index targets of ground-truth ``boxes`` (per
        image, XYXY fed pixels)."""
        grids = location_grids(outputs.distances, self.strides)
        shapes = [tuple(x.shape[-2:]) for x in outputs.distances]
        positive, labels = self._positive_indices(shapes, boxes, classes)
        device = grids[0].device
        counts = [len(g) for g in grids]
        strides = torch.cat(
            [
                torch.full((n,), float(s), device=device)
                for n, s in zip(counts, self.strides, strict=True)
            ]
        )
        ranges = torch.cat(
            [
                torch.tensor([soi], dtype=torch.float32, device=device).expand(n, 2)
                for n, soi in zip(counts, self.config.sizes_of_interest, strict=True)
            ]
        )
        all_grids = torch.cat(grids)
        per_image = [
            self._image_targets(all_grids, strides, ranges, b.to(device).float()) for b in boxes
        ]
        distances, heatmaps = [], []
        starts = accumulate(counts[:-1], initial=0)
        for level, (start, n) in enumerate(zip(starts, counts, strict=True)):
            stride = float(self.strides[level])
            distances += [d[start : start + n] / stride for d, _ in per_image]
            heatmaps += [h[start : start + n] for _, h in per_image]
        return CenterNetTargets(positive, labels, torch.cat(distances), torch.cat(heatmaps))

    def _positive_indices(self, shapes, boxes, classes) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat index of each box's centre cell on every level whose size range holds the
        box's half-diagonal (a box can be positive on two levels; repeats kept)."""
        num_levels, batch = len(self.strides), len(boxes)
        device = boxes[0].device if boxes else torch.device("cpu")
        shape = torch.tensor(shapes, dtype=torch.long, device=device)
        per_level = shape[:, 0] * shape[:, 1]
        bases = torch.tensor(
            [int(batch * per_level[:lvl].sum()) for lvl in range(num_levels)], device=device
        )
        strides = torch.tensor(self.strides, dtype=torch.long, device=device)
        ranges = torch.tensor(self.config.sizes_of_interest, dtype=torch.float32, device=device)
        positive, labels = [], []
        for image, (box, cls) in enumerate(zip(boxes, classes, strict=True)):
            box = box.to(device).float()
            n = box.shape[0]
            centers = ((box[:, [0, 1]] + box[:, [2, 3]]) / 2).view(n, 1, 2).expand(n, num_levels, 2)
            cells = (centers / strides.view(1, num_levels, 1)).long()
            index = (
                bases.view(1, -1)
                + image * per_level.view(1, -1)
                + cells[:, :, 1] * shape[:, 1].view(1, -1)
                + cells[:, :, 0]
            )
            crit = ((box[:, 2:] - box[:, :2]) ** 2).sum(dim=1) ** 0.5 / 2
            cared = (crit.view(n, 1) >= ranges[:, 0]) & (crit.view(n, 1) <= ranges[:, 1])
            positive.append(index[cared].view(-1))
            labels.append(cls.to(device).view(n, 1).expand(n, num_levels)[cared].view(-1))
        return torch.cat(positive).long(), torch.cat(labels)

    def _image_targets(
        self, grids: torch.Tensor, strides: torch.Tensor, ranges: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, 4) ltrb pixel targets and (M, 1) heatmap of one image's locations."""
        m, n = grids.shape[0], boxes.shape[0]
        if n == 0:
            return grids.new_full((m, 4), -INF), grids.new_zeros((m, 1))
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        gx, gy = grids[:, 0].view(m, 1), grids[:, 1].view(m, 1)
        ltrb = torch.stack(
            (gx - boxes[:, 0], gy - boxes[:, 1], boxes[:, 2] - gx, boxes[:, 3] - gy), dim=2
        )
        centers = ((boxes[:, [0, 1]] + boxes[:, [2, 3]]) / 2).view(1, n, 2).expand(m, n, 2)
        stride = strides.view(m, 1, 1).expand(m, n, 2)
        discrete = ((centers / stride).int() * stride).float() + stride / 2
        location = grids.view(m, 1, 2).expand(m, n, 2)
        is_peak = ((location - discrete) ** 2).sum(dim=2) == 0
        in_box = ltrb.min(dim=2)[0] > 0
        offset = (location - discrete).abs()
        center3x3 = (offset[:, :, 0] <= stride[:, :, 0]) & (offset[:, :, 1] <= stride[:, :, 0])
        crit = ((ltrb[:, :, :2] + ltrb[:, :, 2:]) ** 2).sum(dim=2) ** 0.5 / 2
        cared = (crit >= ranges[:, [0]]) & (crit <= ranges[:, [1]])
        reg_mask = center3x3 & in_box & cared
        dist2 = ((location - centers) ** 2).sum(dim=2)
        dist2[is_peak] = 0
        radius2 = (self.delta**2 * 2 * area).clamp(min=self.config.min_radius**2)
        weighted = dist2 / radius2.view(1, n).expand(m, n)
        masked = weighted.clone()
        masked[~reg_mask] = INF * 1.0
        min_dist, min_index = masked.min(dim=1)
        targets = ltrb[torch.arange(m, device=grids.device), min_index]
        targets[min_dist == INF] = -INF
        heatmap = torch.exp(-weighted.min(dim=1)[0]).view(m, 1)
        heatmap[heatmap < 1e-4] = 0
        return targets, heatmap

    # ------------------------------------------------------------------ losses
    def losses(
        self, outputs: CenterNetOutputs, targets: CenterNetTargets
    ) -> dict[str, torch.Tensor]:
        """GIoU regression and the agnostic heatmap focal losses (keys as the original's)."""
        cfg = self.config
        distances = _flatten(outputs.distances, 4)
        logits = _flatten(outputs.heatmaps, 1).view(-1)
        num_pos = max(mean_over_ranks(targets.positive.numel(), logits.device), 1.0)
        valid = torch.nonzero(targets.distances.max(dim=1)[0] >= 0).squeeze(1)
        reg_norm = max(mean_over_ranks(valid.numel(), logits.device), 1.0)
        loss_loc = cfg.reg_weight * giou_loss(distances[valid], targets.distances[valid]) / reg_norm
        pos, neg = heatmap_focal_loss(
            logits,
            targets.heatmap.max(dim=1)[0],
            targets.positive,
            alpha=cfg.hm_focal_alpha,
            beta=cfg.hm_focal_beta,
            gamma=cfg.loss_gamma,
            clamp=cfg.sigmoid_clamp,
            ignore_high_fp=cfg.ignore_high_fp,
        )
        return {
            "loss_centernet_loc": loss_loc,
            "loss_centernet_agn_pos": cfg.pos_weight * pos / num_pos,
            "loss_centernet_agn_neg": cfg.neg_weight * neg / num_pos,
        }

    # ------------------------------------------------------------------ proposals
    @torch.no_grad()
    def proposals(
        self, outputs: CenterNetOutputs, image_sizes: list[tuple[int, int]], *, training: bool
    ) -> list[Proposals]:
        """Heatmap peaks per image: per-level top-k, one NMS over all levels, then the
        original's k-th value cut (which keeps ties)."""
        cfg = self.config
        pre_topk = cfg.pre_nms_topk_train if training else cfg.pre_nms_topk_test
        post_topk = cfg.post_nms_topk_train if training else cfg.post_nms_topk_test
        nms = cfg.nms_threshold_train if training else cfg.nms_threshold_test
        grids = location_grids(outputs.distances, self.strides)
        per_image: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in image_sizes]
        for level, stride in enumerate(self.strides):
            heat = outputs.heatmaps[level].sigmoid()
            n, _, h, w = heat.shape
            heat = heat.permute(0, 2, 3, 1).reshape(n, -1)
            dist = (outputs.distances[level] * stride).permute(0, 2, 3, 1).reshape(n, -1, 4)
            for i in range(n):
                keep = heat[i] > cfg.inference_threshold
                scores, locs = heat[i][keep], torch.nonzero(keep).squeeze(1)
                if scores.numel() > pre_topk:
                    scores, top = scores.topk(pre_topk, sorted=False)
                    locs = locs[top]
                d, g = dist[i][locs], grids[level][locs]
                boxes = torch.stack(
                    (g[:, 0] - d[:, 0], g[:, 1] - d[:, 1], g[:, 0] + d[:, 2], g[:, 1] + d[:, 3]),
                    dim=1,
                )
                boxes[:, 2] = torch.max(boxes[:, 2], boxes[:, 0] + 0.01)
                boxes[:, 3] = torch.max(boxes[:, 3], boxes[:, 1] + 0.01)
                per_image[i].append((boxes, torch.sqrt(scores)))
        results = []
        for levels in per_image:
            boxes = torch.cat([b for b, _ in levels])
            scores = torch.cat([s for _, s in levels])
            classes = torch.zeros_like(scores, dtype=torch.long)
            keep = batched_nms(boxes.float(), scores, classes, nms)
            boxes, scores = boxes[keep], scores[keep]
            if len(scores) > post_topk:
                threshold, _ = torch.kthvalue(scores.float().cpu(), len(scores) - post_topk + 1)
                keep = torch.nonzero(scores >= threshold.item()).squeeze(1)
                boxes, scores = boxes[keep], scores[keep]
            results.append(Proposals(boxes, scores))
        return results


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed 1 - GIoU of (l, t, r, b) distance pairs, IoU smoothed by +1 as the original."""
    pl, pt, pr, pb = pred.unbind(1)
    tl, tt, tr, tb = target.unbind(1)
    target_area = (tl + tr) * (tt + tb)
    pred_area = (pl + pr) * (pt + pb)
    w_inter = torch.min(pl, tl) + torch.min(pr, tr)
    h_inter = torch.min(pb, tb) + torch.min(pt, tt)
    enclosing = (torch.max(pl, tl) + torch.max(pr, tr)) * (torch.max(pb, tb) + torch.max(pt, tt))
    inter = w_inter * h_inter
    union = target_area + pred_area - inter
    ious = (inter + 1.0) / (union + 1.0)
    gious = ious - (enclosing - union) / enclosing
    return (1 - gious).sum()


def heatmap_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    positive: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    gamma: float,
    clamp: float,
    ignore_high_fp: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) focal terms of a Gaussian heatmap, before normalisation."""
    pred = torch.clamp(logits.sigmoid(), min=clamp, max=1 - clamp)
    neg_weights = torch.pow(1 - targets, beta)
    pos_pred = pred[positive]
    pos_loss = torch.log(pos_pred) * torch.pow(1 - pos_pred, gamma)
    neg_loss = torch.log(1 - pred) * torch.pow(pred, gamma) * neg_weights
    if ignore_high_fp > 0:
        neg_loss = (pred < ignore_high_fp).float() * neg_loss
    pos_loss, neg_loss = -pos_loss.sum(), -neg_loss.sum()
    if alpha >= 0:
        pos_loss, neg_loss = alpha * pos_loss, (1 - alpha) * neg_loss
    return pos_loss, neg_loss
