"""Multi-scale deformable attention core (the sampling-and-weighting step of MSDeformAttn).

The reference backend is pure PyTorch (``grid_sample``, bilinear, zero padding,
``align_corners=False``): it runs on CPU and GPU, is differentiable by autograd, and every faster
backend is checked against it. Backends register under a name and are chosen with
``DECOLA_MSDA_BACKEND`` or the ``backend=`` argument. Without either, CUDA tensors use the fused
``triton`` backend once it has passed a self-check against the reference on this device, and
everything else uses ``pytorch``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from decola_core.errors import DecolaError
from decola_core.modeling.ops.ms_deform_attn_triton import (
    ms_deform_attn_triton,
    triton_import_error,
)

BACKEND_ENV = "DECOLA_MSDA_BACKEND"
DEFAULT_BACKEND = "pytorch"
#: Queries processed at once; bounds the (B*M, d, Lq, L*P) sampling buffer for class mode.
DEFAULT_QUERY_CHUNK = 4096

Backend = Callable[..., torch.Tensor]
_BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, fn: Backend) -> None:
    """Make ``fn`` selectable as backend ``name`` (signature of :func:`ms_deform_attn_pytorch`)."""
    _BACKENDS[name] = fn


def available_backends() -> list[str]:
    """Names of the registered backends."""
    return sorted(_BACKENDS)


def get_backend(
    name: str | None = None, device: torch.device | str | None = None
) -> tuple[str, Backend]:
    """The backend ``name``, else ``$DECOLA_MSDA_BACKEND``, else the default for ``device``."""
    name = name or os.environ.get(BACKEND_ENV) or default_backend(device)[0]
    if name not in _BACKENDS:
        known = ", ".join(available_backends())
        raise DecolaError(f"unknown deformable-attention backend '{name}' (available: {known})")
    return name, _BACKENDS[name]


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    gather: bool = True,
) -> torch.Tensor:
    """Sample and weight multi-scale features.

    For CPU inference (no gradient wanted, not exporting or compiling) and with ``gather``,
    the samples are taken by :func:`ms_deform_attn_gather`, the same math about 2x faster;
    otherwise by ``grid_sample`` per level (backend ``grid_sample`` always does that).

    Args:
        value: (B, S, M, d) projected features of all levels, flattened level after level.
        spatial_shapes: (H_l, W_l) of each level, as Python ints.
        sampling_locations: (B, Lq, M, L, P, 2) in [0, 1] of each level's map, (x, y).
        attention_weights: (B, Lq, M, L, P), already normalised.
        query_chunk: queries per chunk, to bound memory for very many queries.

    Returns:
        (B, Lq, M * d), heads concatenated head-major; float32 when the value is half precision
        (grid_sample would sample and sum in that precision).
    """
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    sampling_locations = sampling_locations.to(value.dtype)
    attention_weights = attention_weights.to(value.dtype)
    batch, _, heads, dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    sizes = [h * w for h, w in spatial_shapes]
    if sum(sizes) != value.shape[1]:
        raise ValueError(f"spatial_shapes cover {sum(sizes)} tokens but value has {value.shape[1]}")
    if gather and _gather_applies(value, sampling_locations, attention_weights):
        return ms_deform_attn_gather(value, spatial_shapes, sampling_locations, attention_weights)
    # (B*M, d, H_l, W_l) per level
    value_levels = [
        v.flatten(2).transpose(1, 2).reshape(batch * heads, dim, h, w)
        for v, (h, w) in zip(value.split(sizes, dim=1), spatial_shapes, strict=True)
    ]

    def sample(locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, q, M, L, P, 2) locations and (B, q, M, L, P) weights -> (B, q, M * d)."""
        queries = locations.shape[1]
        grids = 2 * locations - 1
        sampled = [
            F.grid_sample(
                value_levels[lvl],
                grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1),  # (B*M, q, P, 2)
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )
            for lvl in range(levels)
        ]  # each (B*M, d, q, P)
        stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*M, d, q, L*P)
        weights = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
        return (stacked * weights).sum(-1).view(batch, heads * dim, queries).transpose(1, 2)

    if not isinstance(num_queries, int):  # symbolic (under export): chunks would fix the count
        return sample(sampling_locations, attention_weights).contiguous()
    step = max(1, query_chunk)
    outputs = [
        sample(sampling_locations[:, s : s + step], attention_weights[:, s : s + step])
        for s in range(0, num_queries, step)
    ]
    return torch.cat(outputs, dim=1).contiguous()


def _gather_applies(*tensors: torch.Tensor) -> bool:
    """Inference on the CPU, outside export and compilation: the gather formulation."""
    if any(t.device.type != "cpu" for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    return not (tracing or torch.compiler.is_compiling())


def ms_deform_attn_gather(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The same sampling as one weighted gather (``embedding_bag``), without gradients.

    Each (image, query, head) is a bag of its L * P * 4 bilinear corners, weighted by corner
    weight times attention weight (0 for corners outside the map); nothing of size
    (queries x samples x dim) is written, which makes it about 2x faster than grid_sample on
    the CPU. Arguments and result as :func:`ms_deform_attn_pytorch`.
    """
    batch, tokens, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    device = value.device
    sizes_wh = torch.tensor([[w, h] for h, w in spatial_shapes], device=device)
    widths = sizes_wh[:, 0].to(torch.int32).view(levels, 1, 1)  # broadcast over (L, P, 2)
    heights = sizes_wh[:, 1].to(torch.int32).view(levels, 1, 1)
    starts = torch.tensor([0] + [h * w for h, w in spatial_shapes[:-1]], device=device).cumsum(0)
    pixels = sampling_locations * sizes_wh[:, None, :].to(value.dtype) - 0.5
    low = pixels.floor()
    frac = pixels - low
    low = low.to(torch.int32)
    step = torch.tensor([0, 1], device=device, dtype=torch.int32)  # low and high corner
    high = step.bool()
    xs, ys = low[..., 0, None] + step, low[..., 1, None] + step  # (B, Q, M, L, P, 2)
    fx, fy = frac[..., 0, None], frac[..., 1, None]
    wx = torch.where((xs >= 0) & (xs < widths), torch.where(high, fx, 1 - fx), 0)
    wy = torch.where((ys >= 0) & (ys < heights), torch.where(high, fy, 1 - fy), 0)
    wy = wy * attention_weights[..., None]
    xs = torch.minimum(xs.clamp_min(0), widths - 1)  # outside corners weigh 0: any valid row
    ys = torch.minimum(ys.clamp_min(0), heights - 1)
    image_head = torch.arange(batch, device=device, dtype=torch.int32).view(-1, 1, 1, 1, 1) * heads
    image_head = image_head + torch.arange(heads, device=device, dtype=torch.int32).view(-1, 1, 1)
    level_start = image_head * tokens + starts.to(torch.int32).view(-1, 1)  # (B, 1, M, L, 1)
    rows = level_start[..., None] + ys * widths
    index = (rows[..., :, None] + xs[..., None, :]).view(batch * queries * heads, -1)
    weight = (wy[..., :, None] * wx[..., None, :]).view(batch * queries * heads, -1)
    table = value.permute(0, 2, 1, 3).reshape(batch * heads * tokens, dim)
    out = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
    return out.view(batch, queries, heads * dim)


register_backend(DEFAULT_BACKEND, ms_deform_attn_pytorch)
register_backend("grid_sample", functools.partial(ms_deform_attn_pytorch, gather=False))
register_backend("triton", ms_deform_attn_triton)


#: The default backend of each CUDA device and why, decided once (self-check) per process.
_CUDA_DEFAULTS: dict[int, tuple[str, str]] = {}


def default_backend(device: torch.device | str | None = None) -> tuple[str, str]:
    """The backend used on ``device`` when none is named, and why.

    On CUDA the first call runs the self-check; later calls only read the recorded answer,
    which compiled code can do without a graph break (:func:`resolve_default_backend` makes
    that first call before compiling).
    """
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda":
        return DEFAULT_BACKEND, "not a CUDA device (triton is used on CUDA after a self-check)"
    index = device.index if device.index is not None else 0
    if index not in _CUDA_DEFAULTS:
        _CUDA_DEFAULTS[index] = _cuda_default(index)
    return _CUDA_DEFAULTS[index]


def resolve_default_backend(device: torch.device) -> None:
    """Decide the default backend of ``device`` now (eagerly, outside compiled code)."""
    default_backend(device)


def _cuda_default(index: int) -> tuple[str, str]:
    problem = triton_import_error() or _self_check(torch.device("cuda", index))
    if problem:
        return DEFAULT_BACKEND, f"triton is not used: {problem}"
    return "triton", f"triton passed its self-check on cuda:{index}"


def _self_check(device: torch.device, tolerance: float = 1e-4) -> str | None:
    """Compare triton with the reference on a tiny input; the problem found, or None."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 5), (3, 3)]
    value = torch.randn(2, 39, 2, 8, generator=gen)
    locations = torch.rand(2, 7, 2, 2, 2, 2, generator=gen) * 1.2 - 0.1
    weights = torch.rand(2, 7, 2, 2, 2, generator=gen)
    results = []
    try:
        for backend in (ms_deform_attn_pytorch, ms_deform_attn_triton):
            inputs = [t.to(device).requires_grad_() for t in (value, locations, weights)]
            out = backend(inputs[0], shapes, inputs[1], inputs[2])
            grads = torch.autograd.grad(out.square().sum(), inputs)
            results.append([out, *grads])
    except Exception as error:  # noqa: BLE001 - any failure means "do not use it"
        return f"its kernels failed ({type(error).__name__}: {error})"
    names = ("output", "value grad", "location grad", "weight grad")
    for name, ref, got in zip(names, *results, strict=True):
        if not torch.allclose(got, ref, rtol=tolerance, atol=tolerance):
            return f"its {name} differs from the pytorch backend's"
    return None


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str | None = None,
) -> torch.Tensor:
    """Multi-scale deformable attention with the selected backend (see module docstring)."""
    _, fn = get_backend(backend, value.device)
    return fn(value, spatial_shapes, sampling_locations, attention_weights)
