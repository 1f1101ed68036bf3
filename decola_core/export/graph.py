"""A Deformable-DETR-family detector as one function of tensors, for export.

The graph takes an image batch of one size and returns fixed-size outputs, so that ONNX and
TorchScript files need no Python around them:

- ``images``: float32 (B, 3, H, W), the model's channel order (``data.format``) normalised with
  its pixel mean and std; with ``with_preprocess``, uint8 (B, H, W, 3) RGB instead;
- conditioned mode adds ``prompt_ids`` int64 (K,) (rows of the vocabulary), and with
  ``embeddings_input`` the vocabulary itself, ``embeddings`` float32 (N, D);
- outputs ``boxes`` (B, M, 4) xyxy in input pixels, ``scores`` (B, M), ``classes`` int64
  (B, M) and ``count`` int64 (B,): the first ``count`` rows are detections (scores
  descending), the rest padding (score -1). M is the recipe's detections per image.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from decola_core.errors import InputError
from decola_core.modeling.detector import DeformableDETRBase, ImageBatch
from decola_core.structures.boxes import box_cxcywh_to_xyxy

MODES = ("object", "conditioned")


class DetectionGraph(nn.Module):
    """``model`` (a DETR-family detector) in ``mode`` with ``max_detections`` output rows."""

    def __init__(
        self,
        model: DeformableDETRBase,
        *,
        mode: str = "object",
        max_detections: int = 300,
        with_preprocess: bool = False,
        embeddings_input: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, DeformableDETRBase):
            raise InputError(
                f"export supports the Deformable-DETR detectors (decola, deformable_detr), "
                f"not {model.architecture} (its proposals, NMS and cascade are data-dependent)"
            )
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)} (got '{mode}')")
        if mode == "conditioned" and not model.supports_prompts:
            raise InputError(
                f"the {model.architecture} detector has no class mode; export it in object mode"
            )
        if embeddings_input and mode != "conditioned":
            raise InputError("embeddings as an input need the conditioned mode")
        self.model = model.eval()
        self.conditioned = mode == "conditioned"
        self.max_detections = max_detections
        self.with_preprocess = with_preprocess
        self.embeddings_input = embeddings_input
        #: every classifier's weight buffer, named from this module (replaced per call when
        #: the vocabulary is an input)
        self.weight_names = [
            f"model.{n}" for n, _ in model.named_buffers() if n.endswith(".zs_weight")
        ]

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def embed_dim(self) -> int:
        return int(self.model.class_embed[-1].zs_weight.shape[1])

    def class_embeddings(self) -> torch.Tensor:
        """The baked-in vocabulary's rows (normalised as the classifier stores them)."""
        first = self.model.class_embed[-1]
        return first.zs_weight[: first.num_classes]

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) RGB -> the float (B, 3, H, W) input the model expects."""
        model = self.model
        images = pixels.permute(0, 3, 1, 2).float()
        if model.input_format == "BGR":
            images = images.flip(1)
        return (images - model.pixel_mean) / model.pixel_std

    def input_names(self) -> list[str]:
        names = ["images"]
        if self.conditioned:
            names.append("prompt_ids")
        if self.embeddings_input:
            names.append("embeddings")
        return names

    output_names = ["boxes", "scores", "classes", "count"]

    def forward(
        self,
        images: torch.Tensor,
        prompt_ids: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if embeddings is None:
            return self._detect(images, prompt_ids)
        # the vocabulary as an input: every classifier's weight buffer replaced for this call
        first = self.model.class_embed[-1]
        weight = F.normalize(embeddings.float(), p=2, dim=1) if first.norm_weight else embeddings
        rows = torch.cat([weight, first.zs_weight[first.num_classes :]])
        if not torch.jit.is_tracing():  # torch.export (ONNX) and eager: a functional call
            buffers = {name: rows for name in self.weight_names}
            return functional_call(
                self, buffers, (images, prompt_ids), strict=False, tie_weights=False
            )
        heads = [self.get_submodule(n.rsplit(".", 1)[0]) for n in self.weight_names]
        saved = [head.zs_weight for head in heads]  # TorchScript's tracer: swap and restore
        try:
            for head in heads:
                head.zs_weight = rows
            return self._detect(images, prompt_ids)
        finally:
            for head, weight in zip(heads, saved, strict=True):
                head.zs_weight = weight

    def _detect(self, images: torch.Tensor, prompt_ids: torch.Tensor | None):
        model = self.model
        if self.with_preprocess:
            images = self.normalise(images)
        batch, _, height, width = images.shape
        mask = torch.zeros((batch, height, width), dtype=torch.bool, device=images.device)
        out = model.forward_batch(ImageBatch(images, mask, []), prompt_ids)
        prob = out.pred_logits.sigmoid().flatten(1)  # (B, Q * C), C = 1 in class mode
        classes_per_query = out.pred_logits.shape[2]
        # padding rows (score -1) make the top-k size fixed whatever the number of candidates
        padding = prob.new_full((batch, self.max_detections), -1.0)
        scores, index = torch.topk(torch.cat([prob, padding], 1), self.max_detections, dim=1)
        valid = scores >= 0
        index = torch.where(valid, index, torch.zeros_like(index))
        query = torch.div(index, classes_per_query, rounding_mode="floor")
        if out.prompt_inds is not None:
            classes = torch.gather(out.prompt_inds, 1, query)
        else:
            classes = index % classes_per_query
        # the image size as tensors (sums over the dynamic axes, not Python constants)
        w = torch.ones_like(images[0, 0, 0, :]).sum()
        h = torch.ones_like(images[0, 0, :, 0]).sum()
        scale = torch.stack([w, h, w, h])
        boxes = torch.gather(
            box_cxcywh_to_xyxy(out.pred_boxes) * scale, 1, query.unsqueeze(-1).expand(-1, -1, 4)
        )
        boxes = torch.where(valid.unsqueeze(-1), boxes, torch.zeros_like(boxes))
        classes = torch.where(valid, classes, torch.full_like(classes, -1))
        return boxes, scores, classes, valid.sum(1)
