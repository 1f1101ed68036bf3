"""Deformable-attention core: the grid_sample backend equals a literal evaluation of the math."""

from __future__ import annotations

import pytest
import torch

from decola_core.errors import DecolaError
from decola_core.modeling.ops import available_backends, get_backend, ms_deform_attn
from decola_core.modeling.ops.ms_deform_attn import ms_deform_attn_pytorch

SHAPES = [(5, 7), (3, 4), (2, 2)]


def bilinear_zero_padded(feature: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample a (H, W, d) map at pixel coordinates (x, y); outside neighbours contribute 0."""
    height, width, _ = feature.shape
    x0, y0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
    total = torch.zeros(feature.shape[-1], dtype=feature.dtype)
    for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
        for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                total += wy * wx * feature[yy, xx]
    return total


def literal_reference(value, shapes, locations, weights) -> torch.Tensor:
    """spec/model.md §7.2 step 5, evaluated sample by sample."""
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, queries, heads * dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                acc = torch.zeros(dim, dtype=value.dtype)
                for lvl, (h, w) in enumerate(shapes):
                    feature = value[b, starts[lvl] : starts[lvl] + h * w, m].view(h, w, dim)
                    for p in range(points):
                        lx, ly = locations[b, q, m, lvl, p].tolist()
                        sample = bilinear_zero_padded(feature, lx * w - 0.5, ly * h - 0.5)
                        acc += weights[b, q, m, lvl, p] * sample
                out[b, q, m * dim : (m + 1) * dim] = acc
    return out


def random_inputs(queries: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    batch, heads, dim, points = 2, 2, 3, 3
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, tokens, heads, dim, generator=gen, dtype=torch.float64)
    # locations slightly outside [0, 1] exercise the zero padding
    locations = (
        torch.rand(
            batch, queries, heads, len(SHAPES), points, 2, generator=gen, dtype=torch.float64
        )
        * 1.3
        - 0.15
    )
    weights = torch.rand(
        batch, queries, heads, len(SHAPES), points, generator=gen, dtype=torch.float64
    )
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True)
    return value, locations, weights


def test_pytorch_backend_matches_the_literal_math() -> None:
    value, locations, weights = random_inputs()
    got = ms_deform_attn(value, SHAPES, locations, weights)
    expected = literal_reference(value, SHAPES, locations, weights)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_query_chunking_gives_identical_results_and_gradients() -> None:
    value, locations, weights = random_inputs(queries=11, seed=3)
    value.requires_grad_(True)
    whole = ms_deform_attn_pytorch(value, SHAPES, locations, weights)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), value)
    chunked = ms_deform_attn_pytorch(value, SHAPES, locations, weights, query_chunk=4)
    (grad_chunked,) = torch.autograd.grad(chunked.square().sum(), value)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    torch.testing.assert_close(grad_chunked, grad_whole, rtol=1e-12, atol=1e-12)


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "pytorch" in available_backends()
    monkeypatch.setenv("DECOLA_MSDA_BACKEND", "nonexistent")
    with pytest.raises(DecolaError, match="unknown deformable-attention backend 'nonexistent'"):
        get_backend()
    assert get_backend("pytorch")[0] == "pytorch"


def test_shape_mismatch_is_reported() -> None:
    value, locations, weights = random_inputs()
    with pytest.raises(ValueError, match="spatial_shapes cover"):
        ms_deform_attn(value, [(5, 7)], locations[:, :, :, :1], weights[:, :, :, :1])


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    value, locations, weights = random_inputs(queries=64, seed=5)
    cpu = ms_deform_attn(value.float(), SHAPES, locations.float(), weights.float())
    gpu = ms_deform_attn(
        value.float().cuda(), SHAPES, locations.float().cuda(), weights.float().cuda()
    )
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
