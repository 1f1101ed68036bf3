"""ResNet in timm/torchvision layout (``conv1, bn1, layer1..4``) with frozen batch norm.

The ImageNet-21k ResNet-50 of the released models uses exactly these names; outputs are chosen
by level (log2 of the stride): level 2 = layer1 (stride 4) ... level 5 = layer4 (stride 32).
Stages above the highest requested level are not built.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from decola_core.errors import ConfigError

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a FrozenBatchNorm2d with the same stats."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


class ResNetBody(nn.Module):
    """``base`` is the truncated ResNet; ``forward`` returns {"layer<level>": feature}."""

    def __init__(
        self, name: str, out_levels: list[int], norm: str = "FrozenBN", freeze_at: int = 0
    ):
        super().__init__()
        if name not in ARCHITECTURES:
            choices = ", ".join(ARCHITECTURES)
            raise ConfigError(f"model.backbone.name '{name}' is not supported ({choices})")
        if not out_levels or min(out_levels) < 2 or max(out_levels) > 5:
            raise ConfigError(f"model.backbone.out_levels must lie in 2..5 (got {out_levels})")
        base = getattr(torchvision.models, name)(weights=None, zero_init_residual=True)
        self.out_levels = sorted(out_levels)
        for stage in range(max(self.out_levels), 5):  # drop stages after the last output
            delattr(base, f"layer{stage}")
        del base.fc, base.avgpool
        if norm == "FrozenBN":
            freeze_batch_norm(base)
        elif norm == "SyncBN":  # statistics synchronised over the processes of a DDP job
            base = nn.SyncBatchNorm.convert_sync_batchnorm(base)
        self.base = base
        self.out_channels = {
            f"layer{lvl}": _block_channels(self._stage(lvl - 1)[-1]) for lvl in self.out_levels
        }
        self.strides = {f"layer{lvl}": 2**lvl for lvl in self.out_levels}
        self._freeze(freeze_at)

    def _stage(self, index: int) -> nn.Module:
        return getattr(self.base, f"layer{index}")

    def _freeze(self, freeze_at: int) -> None:
        stem = [self.base.conv1, self.base.bn1]
        stages = [stem] + [[self._stage(i)] for i in range(1, max(self.out_levels))]
        for modules in stages[:freeze_at]:
            for module in modules:
                for p in module.parameters():
                    p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = self.base
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        outputs = {}
        for stage in range(1, max(self.out_levels)):
            x = self._stage(stage)(x)
            if stage + 1 in self.out_levels:
                outputs[f"layer{stage + 1}"] = x
        return outputs


def _block_channels(block: nn.Module) -> int:
    """Output channels of a ResNet block (Bottleneck ends in conv3, BasicBlock in conv2)."""
    last = block.conv3 if hasattr(block, "conv3") else block.conv2
    return last.out_channels
