"""Backbone construction from a recipe, and the masked wrapper the detector uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from decola_core.config.schema import D2ResNetBackbone, SwinBackbone, TimmResNetBackbone
from decola_core.errors import ConfigError
from decola_core.modeling.backbone.d2_resnet import D2ResNet
from decola_core.modeling.backbone.resnet import ResNetBody
from decola_core.modeling.backbone.swin import SwinTransformer


@dataclass
class BackboneFeatures:
    """Feature maps (in ``in_features`` order) with their padding masks."""

    features: list[torch.Tensor]
    masks: list[torch.Tensor]


def build_backbone(config) -> nn.Module:
    """The feature extractor for ``model.backbone``; exposes ``out_channels`` by feature name."""
    if isinstance(config, TimmResNetBackbone):
        return ResNetBody(config.name, config.out_levels, config.norm, config.freeze_at)
    if isinstance(config, SwinBackbone):
        return SwinTransformer.from_size(config.size, config.out_indices, config.use_checkpoint)
    if isinstance(config, D2ResNetBackbone):
        return D2ResNet(
            config.depth, config.out_features, config.stride_in_1x1, config.norm, config.freeze_at
        )
    raise ConfigError(f"unknown backbone {config!r}")


class MaskedBackbone(nn.Module):
    """Runs the backbone and resizes the image padding mask to every output (nearest)."""

    def __init__(self, body: nn.Module, in_features: list[str]) -> None:
        super().__init__()
        self.backbone = body
        missing = [f for f in in_features if f not in body.out_channels]
        if missing:
            known = ", ".join(body.out_channels)
            raise ConfigError(
                f"model.transformer.in_features {missing} are not backbone outputs ({known})"
            )
        self.in_features = list(in_features)
        self.num_channels = [body.out_channels[f] for f in in_features]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> BackboneFeatures:
        outputs = self.backbone(images)
        features = [outputs[name] for name in self.in_features]
        masks = [
            F.interpolate(mask[None].float(), size=f.shape[-2:]).to(torch.bool)[0] for f in features
        ]
        return BackboneFeatures(features, masks)
