"""Sine position encodings of feature maps and of boxes (Deformable-DETR variants)."""

from __future__ import annotations

import math

import torch

TEMPERATURE = 10000.0


def _frequencies(num_feats: int, device: torch.device) -> torch.Tensor:
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return TEMPERATURE ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave(values: torch.Tensor) -> torch.Tensor:
    """[..., F] -> sin of even, cos of odd frequencies, interleaved back to [..., F]."""
    return torch.stack((values[..., 0::2].sin(), values[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_embedding(mask: torch.Tensor, num_feats: int) -> torch.Tensor:
    """(B, H, W) padding mask (True = pad) -> (B, 2*num_feats, H, W): [y block; x block].

    Normalised to 2*pi over the valid region, with Deformable DETR's -0.5 offset.
    """
    not_mask = ~mask
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    dim_t = _frequencies(num_feats, mask.device)
    pos_x = _interleave(x[..., None] / dim_t)
    pos_y = _interleave(y[..., None] / dim_t)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def proposal_position_embedding(box_logits: torch.Tensor, num_feats: int) -> torch.Tensor:
    """(B, Q, 4) boxes in logit space -> (B, Q, 4*num_feats), coordinates in cx, cy, w, h order."""
    dim_t = _frequencies(num_feats, box_logits.device)
    values = box_logits.sigmoid() * (2 * math.pi)
    return _interleave(values[..., None] / dim_t).flatten(2)
