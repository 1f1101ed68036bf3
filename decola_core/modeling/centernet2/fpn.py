"""The CenterNet2 backbone: a ResNet or Swin body with an FPN on its three outputs (strides
8/16/32) and P6/P7 computed from the FPN's P5 (detectron2's ``LastLevelP6P7_P5``).

Module names equal the original's (``fpn_lateral3``, ``top_block.p6``, ``bottom_up``), so a
released checkpoint loads by name."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from decola_core.errors import ConfigError


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's XavierFill as detectron2 uses it: Kaiming-uniform with a = 1, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


class LastLevelP6P7(nn.Module):
    """P6 = conv(P5) and P7 = conv(relu(P6)), both 3x3 with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, 2, 1)
        self.p7 = nn.Conv2d(channels, channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            c2_xavier_fill(module)

    def forward(self, p5: torch.Tensor) -> list[torch.Tensor]:
        p6 = self.p6(p5)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    """Top-down feature pyramid; ``forward`` returns {"p3": ..., ..., "p7": ...}."""

    def __init__(self, bottom_up: nn.Module, in_features: list[str], channels: int) -> None:
        super().__init__()
        if len(in_features) != 3:
            raise ConfigError(f"model.fpn.in_features needs 3 features (got {in_features})")
        missing = [f for f in in_features if f not in bottom_up.out_channels]
        if missing:
            known = ", ".join(bottom_up.out_channels)
            raise ConfigError(f"model.fpn.in_features {missing} are not outputs of ({known})")
        strides = [bottom_up.strides[f] for f in in_features]
        self.levels = [int(math.log2(s)) for s in strides]
        for level, feature in zip(self.levels, in_features, strict=True):
            lateral = nn.Conv2d(bottom_up.out_channels[feature], channels, 1)
            output = nn.Conv2d(channels, channels, 3, 1, 1)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{level}", lateral)
            self.add_module(f"fpn_output{level}", output)
        self.top_block = LastLevelP6P7(channels)
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.out_channels = channels
        #: Input sizes are padded to a multiple of the coarsest input stride (not of P7's).
        self.size_divisibility = strides[-1]
        last = self.levels[-1]
        self.strides = {f"p{lvl}": 2**lvl for lvl in (*self.levels, last + 1, last + 2)}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.bottom_up(images)
        inputs = [features[name] for name in self.in_features]
        outputs: list[torch.Tensor] = []
        running = None
        for level, x in zip(reversed(self.levels), reversed(inputs), strict=True):
            lateral = getattr(self, f"fpn_lateral{level}")(x)
            if running is not None:
                lateral = lateral + F.interpolate(running, scale_factor=2.0, mode="nearest")
            running = lateral
            outputs.insert(0, getattr(self, f"fpn_output{level}")(running))
        outputs.extend(self.top_block(outputs[-1]))
        return dict(zip(self.strides, outputs, strict=True))
