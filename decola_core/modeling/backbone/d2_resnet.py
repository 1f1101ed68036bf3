"""ResNet in detectron2's layout (``stem.conv1``, ``res2..res5``, ``conv.norm``, ``shortcut``),
as used by the BoxSup R50 ImageNet-1k baseline with detectron2's torchvision weights."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from decola_core.errors import ConfigError

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def norm_layer(norm: str, channels: int) -> nn.Module:
    """detectron2's ``get_norm``: FrozenBN, BN, SyncBN (synchronised under DDP) or GN (32)."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    return nn.BatchNorm2d(channels)


class ConvNorm(nn.Conv2d):
    """Conv2d (no bias) with a ``norm`` child, detectron2's ``Conv2d(..., norm=...)``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        norm: str = "FrozenBN",
    ) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.norm = norm_layer(norm, cout)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, mid: int, stride: int, stride_in_1x1: bool, norm: str):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = ConvNorm(cin, cout, 1, stride, norm=norm) if cin != cout else None
        self.conv1 = ConvNorm(cin, mid, 1, s1, norm=norm)
        self.conv2 = ConvNorm(mid, mid, 3, s3, padding=1, norm=norm)
        self.conv3 = ConvNorm(mid, cout, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class Stem(nn.Module):
    def __init__(self, norm: str) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, 64, 7, 2, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu_(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class D2ResNet(nn.Module):
    """Outputs {"res<k>": feature} for k in ``out_features`` (res2 stride 4 ... res5 stride 32)."""

    def __init__(
        self,
        depth: int,
        out_features: list[str],
        stride_in_1x1: bool = True,
        norm: str = "FrozenBN",
        freeze_at: int = 2,
    ) -> None:
        super().__init__()
        if depth not in BLOCKS:
            raise ConfigError(f"model.backbone.depth must be one of {sorted(BLOCKS)} (got {depth})")
        levels = sorted(int(name[3:]) for name in out_features)
        if not levels or levels[0] < 2 or levels[-1] > 5:
            raise ConfigError(
                f"model.backbone.out_features must be res2..res5 (got {out_features})"
            )
        self.stem = Stem(norm)
        self.stage_names = []
        cin, mid = 64, 64
        for index, blocks in enumerate(BLOCKS[depth][: levels[-1] - 1]):
            cout = mid * 4
            stage = nn.Sequential(
                *[
                    Bottleneck(
                        cin if i == 0 else cout,
                        cout,
                        mid,
                        2 if (i == 0 and index > 0) else 1,
                        stride_in_1x1,
                        norm,
                    )
                    for i in range(blocks)
                ]
            )
            name = f"res{index + 2}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            cin, mid = cout, mid * 2
        self.out_features = [f"res{k}" for k in levels]
        self.out_channels = {f"res{k}": 256 * 2 ** (k - 2) for k in levels}
        for module in [self.stem, *[getattr(self, n) for n in self.stage_names]][:freeze_at]:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs
