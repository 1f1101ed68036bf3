"""Multi-scale deformable attention as fused Triton kernels (forward and backward).

Same contract as :func:`~decola_core.modeling.ops.ms_deform_attn.ms_deform_attn_pytorch`:
bilinear sampling with zero padding and ``align_corners=False``, gradients for the value, the
sampling locations and the attention weights. One program handles a block of queries of one
(image, head) pair and all its levels and points, so nothing of size (queries x points x dim) is
ever written to memory. Accumulation is float32 whatever the value's dtype; the value gradient is
accumulated with atomic adds into a float32 buffer.

Kernels run compiled on CUDA tensors. With ``TRITON_INTERPRET=1`` they run in Triton's
interpreter on CPU tensors, which is how the test suite checks them without a GPU.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from decola_core.errors import DecolaError

#: Queries per program on the GPU; the (BLOCK_Q, dim) tile stays in registers.
BLOCK_Q = 64
#: Upper bound of the block in the interpreter, where fewer, larger programs run faster.
INTERPRETER_BLOCK_Q = 256
INTERPRET_ENV = "TRITON_INTERPRET"


_IMPORT_ERROR: list[str | None] = []  # filled by the first triton_import_error() call
_KERNELS: dict[bool, tuple] = {}  # interpreted? -> (forward, backward)


def triton_import_error() -> str | None:
    """Why Triton cannot be used here, or None when it imports (checked once)."""
    if not _IMPORT_ERROR:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _IMPORT_ERROR.append(None)
        except Exception as error:  # noqa: BLE001 - any import failure means "not usable"
            _IMPORT_ERROR.append(f"triton does not import ({type(error).__name__}: {error})")
    return _IMPORT_ERROR[0]


def _build_kernels(interpreted: bool) -> tuple:
    """The kernels jitted for the GPU, or run by Triton's interpreter on CPU tensors."""
    import triton
    from triton.runtime.interpreter import InterpretedFunction

    from decola_core.modeling.ops import _msda_triton_kernels as kernels

    wrap = InterpretedFunction if interpreted else triton.jit
    return wrap(kernels.msda_forward), wrap(kernels.msda_backward)


def _kernels_for(device: torch.device) -> tuple:
    reason = triton_import_error()
    if reason:
        raise DecolaError(f"the triton deformable-attention backend needs Triton: {reason}")
    interpreted = os.environ.get(INTERPRET_ENV) == "1"
    if device.type != "cuda" and not interpreted:
        raise DecolaError(
            f"the triton deformable-attention backend runs on CUDA tensors, got {device.type} "
            f"(set {INTERPRET_ENV}=1 to run its kernels in Triton's CPU interpreter, for testing)"
        )
    if interpreted not in _KERNELS:
        _KERNELS[interpreted] = _build_kernels(interpreted)
    return _KERNELS[interpreted]


def _level_tables(spatial_shapes: list[tuple[int, int]], device: torch.device):
    shapes = torch.tensor(spatial_shapes, dtype=torch.int32, device=device)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cumsum(sizes, 0, dtype=torch.int32) - sizes
    return shapes.contiguous(), starts.contiguous()


class _Sizes(NamedTuple):
    """The problem's sizes, read from the value (B, S, M, D) and locations (B, Q, M, L, P, 2)."""

    batch: int
    tokens: int
    heads: int
    dim: int
    queries: int
    levels: int
    points: int

    @classmethod
    def of(cls, value: torch.Tensor, locations: torch.Tensor) -> _Sizes:
        batch, tokens, heads, dim = value.shape
        _, queries, _, levels, points, _ = locations.shape
        return cls(batch, tokens, heads, dim, queries, levels, points)

    def launch(self, device: torch.device) -> tuple[tuple[int, int], dict]:
        """Grid and compile-time (``tl.constexpr``) arguments of either kernel."""
        import triton

        block_q = BLOCK_Q
        if device.type != "cuda":
            block_q = max(16, min(INTERPRETER_BLOCK_Q, triton.next_power_of_2(self.queries)))
        grid = (triton.cdiv(self.queries, block_q), self.batch * self.heads)
        constants = dict(
            HEADS=self.heads, DIM=self.dim, LEVELS=self.levels, POINTS=self.points,
            BLOCK_Q=block_q, BLOCK_D=triton.next_power_of_2(self.dim),
        )  # fmt: skip
        return grid, constants


class _TritonMSDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, locations, weights):
        forward_kernel, _ = _kernels_for(value.device)
        sizes = _Sizes.of(value, locations)
        shapes, starts = _level_tables(spatial_shapes, value.device)
        value = value.contiguous()
        locations = locations.float().contiguous()
        weights = weights.float().contiguous()
        out = torch.empty(
            sizes.batch,
            sizes.queries,
            sizes.heads,
            sizes.dim,
            dtype=value.dtype,
            device=value.device,
        )
        grid, constants = sizes.launch(value.device)
        forward_kernel[grid](
            value, shapes, starts, locations, weights, out, sizes.queries, sizes.tokens,
            **constants,
        )  # fmt: skip
        ctx.save_for_backward(value, shapes, starts, locations, weights)
        return out.view(sizes.batch, sizes.queries, sizes.heads * sizes.dim)

    @staticmethod
    def backward(ctx, grad_out):
        _, backward_kernel = _kernels_for(grad_out.device)
        value, shapes, starts, locations, weights = ctx.saved_tensors
        sizes = _Sizes.of(value, locations)
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_locations = torch.empty_like(locations)
        grad_weights = torch.empty_like(weights)
        grid, constants = sizes.launch(value.device)
        backward_kernel[grid](
            value, shapes, starts, locations, weights, grad_out.contiguous(),
            grad_value, grad_locations, grad_weights, sizes.queries, sizes.tokens, **constants,
        )  # fmt: skip
        return grad_value.to(value.dtype), None, grad_locations, grad_weights


def ms_deform_attn_triton(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Fused Triton deformable attention; arguments and result as the pytorch backend's.

    Sampling locations and attention weights are used in float32; the value keeps its dtype
    (float32 or bfloat16/float16) and so does the result.
    """
    sizes = [h * w for h, w in spatial_shapes]
    if sum(sizes) != value.shape[1]:
        raise ValueError(f"spatial_shapes cover {sum(sizes)} tokens but value has {value.shape[1]}")
    return _TritonMSDA.apply(value, spatial_shapes, sampling_locations, attention_weights)
