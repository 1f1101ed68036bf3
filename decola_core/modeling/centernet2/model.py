"""Detic's CenterNet2 detector (``CustomRCNN``: FPN backbone, CenterNet proposals, cascade ROI
heads with CLIP classifiers and a mask head) behind the detector interface."""

from __future__ import annotations

from pathlib import Path

import torch

from decola_core.config.schema import Recipe
from decola_core.errors import InputError
from decola_core.modeling.backbone import build_backbone
from decola_core.modeling.centernet2.boxes import clip_boxes, nonempty
from decola_core.modeling.centernet2.centernet import CenterNet
from decola_core.modeling.centernet2.fpn import FPN
from decola_core.modeling.centernet2.masks import paste_masks
from decola_core.modeling.centernet2.roi_heads import (
    CascadeRoIHeads,
    Draws,
    GroundTruth,
    RoIDetections,
    RoIs,
)
from decola_core.modeling.interface import DetectionModel, KeyMap, TrainStep, register_family
from decola_core.modeling.postprocess import Detections
from decola_core.modeling.resources import load_embeddings, load_fed_loss_weight, resolve_path
from decola_core.structures.boxes import box_cxcywh_to_xyxy

#: Released C2 checkpoints use the native names; only BN step counters are not kept.
C2_KEY_MAP = KeyMap(
    marker="proposal_generator.centernet_head.",
    dropped_suffixes={"num_batches_tracked": "num_batches_tracked"},
)


@register_family("centernet2")
class CenterNet2(DetectionModel):
    """``backbone`` (FPN), ``proposal_generator`` (CenterNet) and ``roi_heads`` (cascade)."""

    supports_masks = True
    key_map = C2_KEY_MAP
    has_unused_parameters = True  # mask head and box regressors on image-labelled batches

    def __init__(
        self,
        backbone: FPN,
        proposal_generator: CenterNet,
        roi_heads: CascadeRoIHeads,
        *,
        pixel_mean: list[float],
        pixel_std: list[float],
        input_format: str = "RGB",
        with_image_labels: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        self.with_image_labels = with_image_labels
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        strides = proposal_generator.strides
        self.proposal_features = [f"p{s.bit_length() - 1}" for s in strides]
        self.roi_features = list(roi_heads.config.in_features)

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, data_root: Path) -> CenterNet2:
        cfg = recipe.model
        c = cfg.classifier
        backbone = FPN(build_backbone(cfg.backbone), cfg.fpn.in_features, cfg.fpn.out_channels)
        embeddings = load_embeddings(
            resolve_path(c.embeddings, data_root), c.num_classes, c.embed_dim, "class embeddings"
        )
        freq_weight = load_fed_loss_weight(
            resolve_path(c.category_info, data_root), c.num_classes, cfg.loss.fed_loss_freq_weight
        )
        roi_heads = CascadeRoIHeads(
            cfg.roi_heads,
            channels=cfg.fpn.out_channels,
            feature_strides=[backbone.strides[f] for f in cfg.roi_heads.in_features],
            embeddings=embeddings,
            freq_weight=freq_weight,
            temperature=c.norm_temperature,
            fed_loss=(cfg.loss.use_fed_loss, cfg.loss.fed_loss_num_classes),
            with_image_labels=cfg.with_image_labels,
        )
        model = cls(
            backbone,
            CenterNet(cfg.centernet, cfg.fpn.out_channels),
            roi_heads,
            pixel_mean=cfg.pixel_mean,
            pixel_std=cfg.pixel_std,
            input_format=recipe.data.format,
            with_image_labels=cfg.with_image_labels,
        )
        model.backbone_fp16 = recipe.solver.amp == "backbone-fp16"
        return model

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.roi_heads.num_classes

    @property
    def trains_masks(self) -> bool:
        return self.roi_heads.mask_on

    # ------------------------------------------------------------------ steps
    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise uint8 RGB images, then zero-pad them to a multiple of the backbone's
        coarsest stride; returns the batch and each image's (height, width)."""
        if not images:
            raise InputError("no images given")
        if self.input_format == "BGR":
            images = [img.flip(0) for img in images]
        normalised = [(img.to(self.device) - self.pixel_mean) / self.pixel_std for img in images]
        stride = self.backbone.size_divisibility
        height = -(-max(int(x.shape[1]) for x in normalised) // stride) * stride
        width = -(-max(int(x.shape[2]) for x in normalised) // stride) * stride
        batch = normalised[0].new_zeros(len(images), 3, height, width)
        for i, x in enumerate(normalised):
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        return batch, [(int(x.shape[1]), int(x.shape[2])) for x in normalised]

    def features(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """FPN levels; in training with the original's FP16 mode the backbone runs in half."""
        if self.training and self.backbone_fp16 and batch.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return {k: v.float() for k, v in self.backbone(batch.half()).items()}
        return self.backbone(batch)

    def forward_train(
        self,
        images: list[torch.Tensor],
        targets: list[GroundTruth],
        *,
        ann_type: str = "box",
        draws: Draws | None = None,
        record: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """The original's loss dict for one batch of 'box' or 'image' data."""
        draws = draws or Draws()
        batch, sizes = self.preprocess(images)
        features = self.call_network(type(self).features, batch)
        targets = [
            GroundTruth(t.boxes.to(self.device).float(), t.classes.to(self.device),
                        t.polygons, list(t.image_labels))
            for t in targets
        ]  # fmt: skip
        head = self.proposal_generator([features[f] for f in self.proposal_features])
        gt = self.proposal_generator.targets(
            head, [t.boxes for t in targets], [t.classes for t in targets]
        )
        proposal_losses = self.proposal_generator.losses(head, gt)
        proposals = self.proposal_generator.proposals(head, sizes, training=True)
        rois = [RoIs(p.boxes, p.scores, size) for p, size in zip(proposals, sizes, strict=True)]
        if record is not None:
            record.update(centernet=head, centernet_targets=gt, proposals=proposals)
        losses = self.roi_heads.forward_train(
            [features[f] for f in self.roi_features],
            rois,
            targets,
            ann_type=ann_type,
            draws=draws,
            record=record,
        )
        if self.with_image_labels and ann_type != "box":
            proposal_losses = {k: v * 0 for k, v in proposal_losses.items()}
        losses.update(proposal_losses)
        return losses

    def training_step(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """The loss terms of a trainer batch (targets: normalised cxcywh boxes)."""
        targets = []
        count = len(step.images)
        for image, target, labels, polygons in zip(
            step.images,
            step.targets,
            step.image_labels or [None] * count,
            step.polygons or [None] * count,
            strict=True,
        ):
            h, w = image.shape[-2:]
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=target["boxes"].device)
            boxes = box_cxcywh_to_xyxy(target["boxes"].float()) * scale
            image_labels = labels.tolist() if labels is not None else []
            targets.append(GroundTruth(boxes, target["labels"], polygons, image_labels))
        return self.forward_train(
            step.images,
            targets,
            ann_type="image" if step.weak else "box",
            draws=Draws(step.generator),
        )

    def forward_test(
        self,
        images: list[torch.Tensor],
        *,
        max_detections: int = 300,
        score_threshold: float = 0.0,
        allowed_classes: list[torch.Tensor] | None = None,
        record: dict | None = None,
    ) -> list[RoIDetections]:
        """Detections per image in the pixels of the images as given."""
        batch, sizes = self.preprocess(images)
        features = self.call_network(type(self).features, batch)
        head = self.proposal_generator([features[f] for f in self.proposal_features])
        proposals = self.proposal_generator.proposals(head, sizes, training=False)
        if record is not None:
            record.update(features=features, centernet=head, proposals=proposals)
        rois = [RoIs(p.boxes, p.scores, size) for p, size in zip(proposals, sizes, strict=True)]
        return self.roi_heads.forward_test(
            [features[f] for f in self.roi_features],
            rois,
            max_detections=max_detections,
            score_threshold=score_threshold,
            allowed_classes=allowed_classes,
            record=record,
        )

    @torch.no_grad()
    def detect(
        self,
        images: list[torch.Tensor],
        output_sizes: list[tuple[int, int]],
        *,
        prompt_ids: torch.Tensor | None = None,
        max_detections: int = 300,
        score_threshold: float = 0.0,
        allowed_classes: list[torch.Tensor] | None = None,
    ) -> list[Detections]:
        if prompt_ids is not None:
            raise InputError("CenterNet2 detectors have no class mode (prompts)")
        results = self.forward_test(
            images,
            max_detections=max_detections,
            score_threshold=score_threshold,
            allowed_classes=allowed_classes,
        )
        fed_sizes = [tuple(int(v) for v in img.shape[-2:]) for img in images]
        return [
            to_original_size(r, fed, out)
            for r, fed, out in zip(results, fed_sizes, output_sizes, strict=True)
        ]


def to_original_size(
    result: RoIDetections, fed_size: tuple[int, int], output_size: tuple[int, int]
) -> Detections:
    """detectron2's ``detector_postprocess``: rescale, clip, drop empty boxes, paste masks."""
    out_h, out_w = output_size
    scale_x, scale_y = out_w / fed_size[1], out_h / fed_size[0]
    boxes = result.boxes.clone()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes = clip_boxes(boxes, output_size)
    keep = nonempty(boxes)
    masks = None
    if result.mask_probs is not None:
        masks = paste_masks(result.mask_probs[keep][:, 0], boxes[keep], output_size)
    return Detections(
        boxes[keep], result.scores[keep], result.classes[keep], tuple(output_size), masks=masks
    )
