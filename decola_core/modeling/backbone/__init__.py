"""Backbones: timm-layout ResNet (FrozenBN), Swin Transformer, detectron2-layout ResNet."""

from decola_core.modeling.backbone.build import BackboneFeatures, MaskedBackbone, build_backbone

__all__ = ["BackboneFeatures", "MaskedBackbone", "build_backbone"]
