"""Deformable-attention core: the grid_sample backend equals a literal evaluation of the math."""

from __future__ import annotations

import importlib

import pytest
import torch

from decola_core.errors import DecolaError
from decola_core.modeling.ops import available_backends, get_backend, ms_deform_attn
from decola_core.modeling.ops.ms_deform_attn import default_backend, ms_deform_attn_pytorch
from decola_core.modeling.ops.ms_deform_attn_triton import (
    ms_deform_attn_triton,
    triton_import_error,
)

SHAPES = [(5, 7), (3, 4), (2, 2)]
msda_module = importlib.import_module("decola_core.modeling.ops.ms_deform_attn")
RESULT_NAMES = ("output", "grad value", "grad loc", "grad w")


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


needs_triton = pytest.mark.skipif(
    triton_import_error() is not None, reason="triton does not import here"
)


def interpreter_inputs(seed: int = 0):
    """float32 inputs: batch 2, 3 levels of different sizes, dim 5 (not a power of two), and
    sampling points inside, on the border, just outside and far outside the maps."""
    value, locations, weights = (t.float() for t in random_inputs(queries=10, seed=seed))
    locations[0, 0, 0, 0, 0] = torch.tensor([-2.0, 3.0])  # far outside: every corner padded
    locations[0, 1, 1, 1, 1] = torch.tensor([0.0, 1.0])  # on the border
    locations[1, 2, 0, 2, 2] = torch.tensor([1.02, -0.03])  # a hair outside
    value = torch.cat([value, value[..., :2]], dim=-1)  # dim 3 -> 5
    return value, locations, weights


@needs_triton
def test_triton_kernels_match_pytorch_in_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output and the value/location/weight gradients of the fused kernels equal the
    reference backend within 1e-5 (fp32), run by Triton's CPU interpreter."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    results = []
    for backend in ("pytorch", "triton"):
        inputs = [t.clone().requires_grad_() for t in interpreter_inputs()]
        out = ms_deform_attn(inputs[0], SHAPES, inputs[1], inputs[2], backend=backend)
        upstream = torch.linspace(-1, 1, out.numel()).view_as(out)
        results.append([out, *torch.autograd.grad(out, inputs, upstream)])
    for name, ref, got in zip(RESULT_NAMES, *results, strict=True):
        assert got.abs().sum() > 0, name
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=name)
    grad_far_outside = results[1][2][0, 0, 0, 0, 0]
    assert grad_far_outside.abs().max() == 0


@needs_triton
def test_triton_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    value, locations, weights = interpreter_inputs()
    with pytest.raises(DecolaError, match="runs on CUDA tensors.*TRITON_INTERPRET=1"):
        ms_deform_attn(value, SHAPES, locations, weights, backend="triton")


@needs_triton
def test_self_check_accepts_the_kernels_and_rejects_a_wrong_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert msda_module._self_check(torch.device("cpu")) is None

    def off_by_a_bit(value, shapes, locations, weights):
        return ms_deform_attn_triton(value, shapes, locations, weights) * 1.01

    monkeypatch.setattr(msda_module, "ms_deform_attn_triton", off_by_a_bit)
    assert "output differs" in msda_module._self_check(torch.device("cpu"))


def test_default_backend_is_pytorch_off_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DECOLA_MSDA_BACKEND", raising=False)
    assert default_backend("cpu")[0] == "pytorch"
    assert get_backend(device="cpu")[0] == "pytorch"
    assert "triton" in available_backends()
    monkeypatch.setenv("DECOLA_MSDA_BACKEND", "triton")
    assert get_backend(device="cpu")[0] == "triton"


def full_model_shapes(encoder: bool):
    """Encoder (every token a query) or decoder (900 queries) at an 800 x 1216 image."""
    shapes = [(100, 152), (50, 76), (25, 38), (13, 19)]
    tokens = sum(h * w for h, w in shapes)
    queries = tokens if encoder else 900
    gen = torch.Generator().manual_seed(1)
    value = torch.randn(2, tokens, 8, 32, generator=gen)
    locations = torch.rand(2, queries, 8, 4, 4, 2, generator=gen) * 1.1 - 0.05
    weights = torch.rand(2, queries, 8, 4, 4, generator=gen).softmax(-1)
    return shapes, value, locations, weights


@pytest.mark.gpu
@pytest.mark.parametrize("encoder", [True, False], ids=["encoder", "decoder"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_pytorch_on_cuda(encoder: bool, dtype: torch.dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    shapes, value, locations, weights = full_model_shapes(encoder)
    results = []
    for backend in ("pytorch", "triton"):
        inputs = [
            value.cuda().to(dtype).requires_grad_(),
            locations.cuda().requires_grad_(),
            weights.cuda().requires_grad_(),
        ]
        out = ms_deform_attn(inputs[0], shapes, inputs[1], inputs[2], backend=backend)
        upstream = torch.ones_like(out) / out.shape[1]
        results.append(
            [out.float(), *(g.float() for g in torch.autograd.grad(out, inputs, upstream))]
        )
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    for name, ref, got in zip(RESULT_NAMES, *results, strict=True):
        torch.testing.assert_close(got, ref, rtol=tolerance, atol=tolerance, msg=name)
    assert default_backend("cuda")[0] == "triton", default_backend("cuda")[1]


def test_cpu_inference_gathers_and_equals_grid_sample() -> None:
    """Without gradients the pytorch backend uses one weighted gather instead of grid_sample:
    the same numbers, out-of-map points included."""
    value, locations, weights = interpreter_inputs(seed=4)
    value.requires_grad_(True)
    assert not msda_module._gather_applies(value, locations, weights)
    sampled = ms_deform_attn_pytorch(value, SHAPES, locations, weights)
    with torch.no_grad():
        assert msda_module._gather_applies(value, locations, weights)
        gathered = ms_deform_attn_pytorch(value, SHAPES, locations, weights)
    torch.testing.assert_close(gathered, sampled.detach(), rtol=1e-6, atol=1e-6)
    direct = msda_module.ms_deform_attn_gather(value.detach(), SHAPES, locations, weights)
    torch.testing.assert_close(direct, gathered, rtol=0, atol=0)


@needs_triton
def test_triton_keeps_bf16_values_and_accumulates_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bf16 value (autocast) stays bf16 in and out; sums are float32, so the result is the
    fp32 reference rounded once (within bf16's resolution), and the gradients keep the inputs'
    dtypes."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    value, locations, weights = interpreter_inputs(seed=2)
    value = value.bfloat16().requires_grad_()
    out = ms_deform_attn(value, SHAPES, locations, weights, backend="triton")
    assert out.dtype == torch.bfloat16
    reference = ms_deform_attn_pytorch(value.detach().float(), SHAPES, locations, weights)
    torch.testing.assert_close(out.float(), reference, rtol=1e-2, atol=1e-2)
    locations.requires_grad_(True)
    out = ms_deform_attn(value, SHAPES, locations, weights, backend="triton")
    grad_value, grad_locations = torch.autograd.grad(out.float().sum(), [value, locations])
    assert grad_value.dtype == torch.bfloat16 and grad_locations.dtype == torch.float32
