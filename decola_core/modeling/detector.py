"""What the Deformable-DETR families (DECOLA and the BoxSup/Detic baseline) share: preprocessing,
backbone, input projections, feature levels, box heads, raw outputs and inference.

The module tree mirrors the original's ``detr.*`` tree (``backbone.0.backbone...``,
``input_proj``, ``transformer``, ``class_embed.0..L``, ``bbox_embed.0..L``), so a released
checkpoint loads by stripping its ``detr.`` prefix (:data:`DETR_KEY_MAP`). Head index L (= number
of decoder layers) is the first stage.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from decola_core.errors import InputError
from decola_core.modeling.backbone import MaskedBackbone
from decola_core.modeling.interface import DetectionModel, KeyMap
from decola_core.modeling.position import sine_position_embedding
from decola_core.modeling.postprocess import Detections, postprocess
from decola_core.modeling.transformer import DeformableTransformer, Record, TransformerOutput
from decola_core.structures.boxes import inverse_sigmoid


class MLP(nn.Module):
    """Linear layers with ReLU between them (``layers.0..n-1``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


@dataclass
class ImageBatch:
    """Normalised images padded to a common size, with the padding mask and true sizes."""

    tensor: torch.Tensor  # (B, 3, H, W)
    mask: torch.Tensor  # (B, H, W), True = padding
    sizes: list[tuple[int, int]]  # (h, w) of each image before padding


@dataclass
class DetectorOutput:
    """Raw outputs: the last decoder layer plus every auxiliary layer and the first stage."""

    pred_logits: torch.Tensor  # (B, Q, 1) class mode, (B, Q, Ncls) object mode
    pred_boxes: torch.Tensor  # (B, Q, 4) cxcywh normalised to the unpadded image
    prompt_inds: torch.Tensor | None  # (B, Q) class id of each query's prompt (class mode)
    aux: list[dict[str, torch.Tensor]] = field(default_factory=list)
    transformer: TransformerOutput | None = None
    image_sizes: list[tuple[int, int]] = field(default_factory=list)


def build_input_proj(num_channels: list[int], hidden_dim: int, num_levels: int) -> nn.ModuleList:
    """1x1 conv + GN per backbone level, then stride-2 3x3 conv + GN for each extra level."""
    layers = [
        nn.Sequential(nn.Conv2d(c, hidden_dim, kernel_size=1), nn.GroupNorm(32, hidden_dim))
        for c in num_channels
    ]
    in_channels = num_channels[-1]
    for _ in range(num_levels - len(num_channels)):
        layers.append(
            nn.Sequential(
                nn.Conv2d(in_channels, hidden_dim, kernel_size=3, stride=2, padding=1),
                nn.GroupNorm(32, hidden_dim),
            )
        )
        in_channels = hidden_dim
    for proj in layers:
        nn.init.xavier_uniform_(proj[0].weight, gain=1)
        nn.init.constant_(proj[0].bias, 0)
    return nn.ModuleList(layers)


#: Released DETR-family checkpoints: ``detr.`` + native name; the phase-2 teacher copy
#: (``pseudo_detr.*``) and BatchNorm counters are dropped; the baseline keeps its federated-loss
#: weights on the criterion.
DETR_KEY_MAP = KeyMap(
    prefix="detr.",
    renames={"criterion.fed_loss_weight": "fed_loss_weight"},
    dropped={"pseudo_detr.": "teacher (pseudo_detr)"},
    dropped_suffixes={"num_batches_tracked": "num_batches_tracked"},
)


class DeformableDETRBase(DetectionModel):
    """What DECOLA and the BoxSup/Detic baseline share: inputs, backbone, levels, box heads."""

    key_map = DETR_KEY_MAP

    def __init__(
        self,
        backbone: MaskedBackbone,
        transformer: DeformableTransformer,
        *,
        num_feature_levels: int,
        pixel_mean: list[float],
        pixel_std: list[float],
        input_format: str = "RGB",
    ) -> None:
        super().__init__()
        #: Channel order the network expects (``data.format``); images arrive as RGB.
        self.input_format = input_format
        hidden_dim = transformer.d_model
        self.num_feature_levels = num_feature_levels
        self.backbone = nn.ModuleList([backbone])
        self.input_proj = build_input_proj(backbone.num_channels, hidden_dim, num_feature_levels)
        self.transformer = transformer
        num_heads = len(transformer.decoder.layers) + 1
        box_head = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.constant_(box_head.layers[-1].weight, 0)
        nn.init.constant_(box_head.layers[-1].bias, 0)
        self.bbox_embed = nn.ModuleList(copy.deepcopy(box_head) for _ in range(num_heads))
        transformer.decoder.bbox_embed = self.bbox_embed
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: list[torch.Tensor]) -> ImageBatch:
        """uint8 (3, H, W) RGB images -> normalised, zero-padded batch (no size divisibility),
        in the channel order of ``input_format``."""
        if not images:
            raise InputError("no images given")
        if self.input_format == "BGR":
            images = [img.flip(0) for img in images]
        normalised = [
            (img.to(self.device).float() - self.pixel_mean) / self.pixel_std for img in images
        ]
        height = max(int(x.shape[1]) for x in normalised)
        width = max(int(x.shape[2]) for x in normalised)
        tensor = normalised[0].new_zeros(len(images), 3, height, width)
        mask = torch.ones(len(images), height, width, dtype=torch.bool, device=self.device)
        for i, x in enumerate(normalised):
            tensor[i, :, : x.shape[1], : x.shape[2]] = x
            mask[i, : x.shape[1], : x.shape[2]] = False
        sizes = [(int(x.shape[1]), int(x.shape[2])) for x in normalised]
        return ImageBatch(tensor, mask, sizes)

    def feature_levels(self, batch: ImageBatch, record: Record = None):
        """Projected feature levels, their masks and sine position encodings."""
        use_fp16 = self.backbone_fp16 and batch.tensor.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_fp16):
            out = self.backbone[0](batch.tensor, batch.mask)
        out.features = [f.float() for f in out.features]
        if record is not None:
            for name, feat, m in zip(
                self.backbone[0].in_features, out.features, out.masks, strict=True
            ):
                record[f"backbone/{name}"] = feat.detach()
                record[f"backbone_mask/{name}"] = m
        srcs = [proj(f) for proj, f in zip(self.input_proj, out.features, strict=False)]
        masks = list(out.masks)
        num_feats = self.transformer.d_model // 2
        for level in range(len(out.features), self.num_feature_levels):
            source = out.features[-1] if level == len(out.features) else srcs[-1]
            src = self.input_proj[level](source)
            mask = nn.functional.interpolate(batch.mask[None].float(), size=src.shape[-2:])
            srcs.append(src)
            masks.append(mask.to(torch.bool)[0])
        pos = [
            sine_position_embedding(m, num_feats).to(s.dtype)
            for m, s in zip(masks, srcs, strict=True)
        ]
        return srcs, masks, pos

    def forward(
        self,
        images: list[torch.Tensor],
        prompt_ids: torch.Tensor | None = None,
        *,
        record: Record = None,
    ) -> DetectorOutput:
        """Detect in ``images`` (uint8, 3 x H x W each); see :meth:`forward_batch`."""
        batch = self.preprocess(images)
        if record is not None:  # recording reads intermediate tensors: always eager
            return self.forward_batch(batch, prompt_ids, record=record)
        return self.call_network(type(self).forward_batch, batch, prompt_ids)

    def forward_batch(
        self, batch: ImageBatch, prompt_ids: torch.Tensor | None = None, *, record: Record = None
    ) -> DetectorOutput:
        """The raw outputs of a preprocessed batch (the family's network)."""
        raise NotImplementedError

    def boxes_per_layer(self, out: TransformerOutput) -> list[torch.Tensor]:
        """Refined boxes of every decoder layer (each from the previous layer's reference)."""
        boxes = []
        for lvl in range(out.hs.shape[0]):
            reference = out.init_reference if lvl == 0 else out.inter_references[lvl - 1]
            boxes.append((self.bbox_embed[lvl](out.hs[lvl]) + inverse_sigmoid(reference)).sigmoid())
        return boxes

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
        out = self(images, prompt_ids)
        return postprocess(
            out.pred_logits,
            out.pred_boxes,
            output_sizes,
            prompt_inds=out.prompt_inds,
            max_detections=max_detections,
            score_threshold=score_threshold,
            allowed_classes=allowed_classes,
        )
