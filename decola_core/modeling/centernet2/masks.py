"""The class-agnostic mask head of CenterNet2 (Mask R-CNN's), its polygon targets and the
pasting of 28x28 masks into the image, as detectron2 computes them (spec §5.12-5.14)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class MaskHead(nn.Module):
    """``num_conv`` 3x3 convs, a 2x deconvolution and a 1x1 predictor (one mask per RoI)."""

    def __init__(self, in_channels: int, conv_dim: int = 256, num_conv: int = 4) -> None:
        super().__init__()
        channels = in_channels
        self.num_conv = num_conv
        for k in range(num_conv):
            conv = nn.Conv2d(channels, conv_dim, 3, 1, 1)
            self.add_module(f"mask_fcn{k + 1}", conv)
            channels = conv_dim
        self.deconv = nn.ConvTranspose2d(channels, conv_dim, 2, 2, 0)
        self.predictor = nn.Conv2d(conv_dim, 1, 1)
        for k in range(num_conv):
            _msra_fill(getattr(self, f"mask_fcn{k + 1}"))
        _msra_fill(self.deconv)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, 14, 14) pooled features -> (n, 1, 28, 28) mask logits."""
        for k in range(self.num_conv):
            x = F.relu(getattr(self, f"mask_fcn{k + 1}")(x))
        return self.predictor(F.relu(self.deconv(x)))


def _msra_fill(module: nn.Module) -> None:
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    nn.init.constant_(module.bias, 0)


def polygon_mask_targets(
    polygons: list[list[np.ndarray]], boxes: torch.Tensor, size: int
) -> torch.Tensor:
    """(n, size, size) bool: each instance's polygons (flat x, y lists in image pixels)
    rasterised inside its box, as detectron2's ``PolygonMasks.crop_and_resize``."""
    from pycocotools import mask as mask_util

    results = []
    for instance, box in zip(polygons, boxes.detach().cpu().numpy(), strict=True):
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        ratio_h = size / max(h, 0.1)
        ratio_w = size / max(w, 0.1)
        scaled = []
        for polygon in instance:
            p = np.asarray(polygon, dtype=np.float64).copy()
            p[0::2] = (p[0::2] - x0) * ratio_w
            p[1::2] = (p[1::2] - y0) * ratio_h
            scaled.append(p)
        if not scaled:
            results.append(torch.zeros(size, size, dtype=torch.bool))
            continue
        rles = mask_util.frPyObjects(scaled, size, size)
        mask = mask_util.decode(mask_util.merge(rles)).astype(bool)
        results.append(torch.from_numpy(mask))
    if not results:
        return torch.zeros(0, size, size, dtype=torch.bool, device=boxes.device)
    return torch.stack(results).to(boxes.device)


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """(n, h, w) mask probabilities pasted into (n, H, W) bool image masks at ``boxes``
    (XYXY pixels of that image): bilinear sampling at pixel centres, each mask only inside
    its box's neighbourhood (detectron2's CPU path; the result equals its GPU path)."""
    height, width = image_size
    out = torch.zeros((len(masks), height, width), dtype=torch.bool, device=masks.device)
    for i in range(len(masks)):
        box = boxes[i : i + 1]
        x0_int, y0_int = torch.clamp(box.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32)
        x1_int = int(torch.clamp(box[:, 2].max().ceil() + 1, max=width))
        y1_int = int(torch.clamp(box[:, 3].max().ceil() + 1, max=height))
        x0_int, y0_int = int(x0_int), int(y0_int)
        x0, y0, x1, y1 = torch.split(box, 1, dim=1)
        img_y = torch.arange(y0_int, y1_int, device=masks.device, dtype=torch.float32) + 0.5
        img_x = torch.arange(x0_int, x1_int, device=masks.device, dtype=torch.float32) + 0.5
        img_y = (img_y - y0) / (y1 - y0) * 2 - 1
        img_x = (img_x - x0) / (x1 - x0) * 2 - 1
        gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
        gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
        grid = torch.stack([gx, gy], dim=3)
        pasted = F.grid_sample(masks[i][None, None].float(), grid, align_corners=False)
        out[i, y0_int:y1_int, x0_int:x1_int] = pasted[0, 0] >= threshold
    return out
