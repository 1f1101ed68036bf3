"""The MSDeformAttn module: projections around the deformable-attention core (spec §7)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from decola_core.modeling.ops.ms_deform_attn import ms_deform_attn


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with ``n_points`` samples per head and level."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model,
            n_levels,
            n_heads,
            n_points,
        )
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring of directions per head, scaled by point index; zero weights."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query (B, Lq, C); reference_points (B, Lq, L, 2|4); input_flatten (B, S, C)."""
        batch, num_queries, _ = query.shape
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, -1, self.n_heads, self.d_model // self.n_heads)
        shape = (batch, num_queries, self.n_heads, self.n_levels, self.n_points)
        offsets = self.sampling_offsets(query).view(*shape, 2)
        weights = self.attention_weights(query).view(batch, num_queries, self.n_heads, -1)
        weights = F.softmax(weights, -1).view(*shape)
        if reference_points.shape[-1] == 2:
            normalizer = torch.tensor(
                [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
            )
            locations = (
                reference_points[:, :, None, :, None, :]
                + offsets / normalizer[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"reference_points must end in 2 or 4, got {reference_points.shape}")
        # locations and weights stay float32 under autocast; each backend decides whether the
        # value may stay in low precision (triton accumulates in float32 either way)
        with torch.autocast(value.device.type, enabled=False):
            output = ms_deform_attn(value, spatial_shapes, locations.float(), weights.float())
        return self.output_proj(output)
