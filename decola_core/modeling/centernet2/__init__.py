"""The CenterNet2 (C2) family: Detic's CustomRCNN with CenterNet proposals, cascade ROI heads
and a class-agnostic mask head, in pure PyTorch."""

from decola_core.modeling.centernet2.model import CenterNet2

__all__ = ["CenterNet2"]
