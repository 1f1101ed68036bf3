"""Triton kernels of the fused deformable attention (see ``ms_deform_attn_triton``).

The functions are left undecorated: the caller wraps them with ``triton.jit`` for the GPU or
with Triton's interpreter for CPU tensors, so one source serves both.

Only built-in ``tl`` operations are used: ``tl.sum`` and ``tl.zeros`` are themselves jitted
functions, which the interpreter cannot call unless Triton was imported with
``TRITON_INTERPRET=1``. ``tl.reduce`` with the standard sum combiner is the same reduction
compiled, and the interpreter recognises it and runs ``numpy.sum``; ``tl.full`` replaces
``tl.zeros``. For the same reason the two kernels spell out their shared per-sample set-up
(pixel coordinates, corners, bilinear weights) instead of calling a helper: a helper would have
to be ``triton.jit`` for the GPU and a plain function for the interpreter in one process.

Layouts (all contiguous): value (B, S, M, D); locations (B, Q, M, L, P, 2) as (x, y) in [0, 1];
weights (B, Q, M, L, P); output and its gradient (B, Q, M, D); shapes (L, 2) as (H, W) and
starts (L,) in int32. Program (i, j) handles queries [i * BLOCK_Q, (i + 1) * BLOCK_Q) of image
j // M and head j % M. Corner c of a sample is (x0 + c % 2, y0 + c // 2).
"""

import triton.language as tl


def msda_forward(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, weight_ptr, out_ptr, num_queries, num_tokens,
    HEADS: tl.constexpr, DIM: tl.constexpr, LEVELS: tl.constexpr, POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    image = tl.program_id(1) // HEADS
    head = tl.program_id(1) % HEADS
    query = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    channel = tl.arange(0, BLOCK_D)
    query_ok = query < num_queries
    channel_ok = channel < DIM
    sample_row = (image * num_queries + query).to(tl.int64) * HEADS + head
    acc = tl.full((BLOCK_Q, BLOCK_D), 0.0, tl.float32)
    for level in tl.static_range(LEVELS):
        height = tl.load(shapes_ptr + 2 * level)
        width = tl.load(shapes_ptr + 2 * level + 1)
        start = tl.load(starts_ptr + level)
        for point in tl.static_range(POINTS):
            sample = (sample_row * LEVELS + level) * POINTS + point
            # grid_sample's arithmetic, step by step: points exactly between pixels (the
            # initial offsets put many there) then fall on the same side of the floor
            x = (
                (2.0 * tl.load(loc_ptr + 2 * sample, mask=query_ok, other=0.0) - 1.0 + 1.0) * width
                - 1.0
            ) / 2.0
            y = (
                (2.0 * tl.load(loc_ptr + 2 * sample + 1, mask=query_ok, other=0.0) - 1.0 + 1.0)
                * height
                - 1.0
            ) / 2.0
            attn = tl.load(weight_ptr + sample, mask=query_ok, other=0.0)
            x_low = tl.floor(x)
            y_low = tl.floor(y)
            frac_x = x - x_low
            frac_y = y - y_low
            for corner in tl.static_range(4):
                cx = x_low.to(tl.int32) + corner % 2
                cy = y_low.to(tl.int32) + corner // 2
                # (1 - f) for the low corner, f for the high one
                wx = (1.0 - frac_x) + (corner % 2) * (2.0 * frac_x - 1.0)
                wy = (1.0 - frac_y) + (corner // 2) * (2.0 * frac_y - 1.0)
                inside = query_ok & (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
                token = (image * num_tokens + start + cy * width + cx).to(tl.int64)
                offsets = (token * HEADS + head)[:, None] * DIM + channel[None, :]
                corner_value = tl.load(
                    value_ptr + offsets, mask=inside[:, None] & channel_ok[None, :], other=0.0
                ).to(tl.float32)
                acc += (attn * wx * wy)[:, None] * corner_value
    out_offsets = sample_row[:, None] * DIM + channel[None, :]
    tl.store(
        out_ptr + out_offsets,
        acc.to(out_ptr.dtype.element_ty),
        mask=query_ok[:, None] & channel_ok[None, :],
    )


def msda_backward(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, weight_ptr, grad_out_ptr,
    grad_value_ptr, grad_loc_ptr, grad_weight_ptr, num_queries, num_tokens,
    HEADS: tl.constexpr, DIM: tl.constexpr, LEVELS: tl.constexpr, POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    image = tl.program_id(1) // HEADS
    head = tl.program_id(1) % HEADS
    query = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    channel = tl.arange(0, BLOCK_D)
    query_ok = query < num_queries
    channel_ok = channel < DIM
    sample_row = (image * num_queries + query).to(tl.int64) * HEADS + head
    grad_out = tl.load(
        grad_out_ptr + sample_row[:, None] * DIM + channel[None, :],
        mask=query_ok[:, None] & channel_ok[None, :],
        other=0.0,
    ).to(tl.float32)
    for level in tl.static_range(LEVELS):
        height = tl.load(shapes_ptr + 2 * level)
        width = tl.load(shapes_ptr + 2 * level + 1)
        start = tl.load(starts_ptr + level)
        for point in tl.static_range(POINTS):
            sample = (sample_row * LEVELS + level) * POINTS + point
            # grid_sample's arithmetic, step by step: points exactly between pixels (the
            # initial offsets put many there) then fall on the same side of the floor
            x = (
                (2.0 * tl.load(loc_ptr + 2 * sample, mask=query_ok, other=0.0) - 1.0 + 1.0) * width
                - 1.0
            ) / 2.0
            y = (
                (2.0 * tl.load(loc_ptr + 2 * sample + 1, mask=query_ok, other=0.0) - 1.0 + 1.0)
                * height
                - 1.0
            ) / 2.0
            attn = tl.load(weight_ptr + sample, mask=query_ok, other=0.0)
            x_low = tl.floor(x)
            y_low = tl.floor(y)
            frac_x = x - x_low
            frac_y = y - y_low
            grad_attn = tl.full((BLOCK_Q,), 0.0, tl.float32)
            grad_x = tl.full((BLOCK_Q,), 0.0, tl.float32)
            grad_y = tl.full((BLOCK_Q,), 0.0, tl.float32)
            for corner in tl.static_range(4):
                cx = x_low.to(tl.int32) + corner % 2
                cy = y_low.to(tl.int32) + corner // 2
                wx = (1.0 - frac_x) + (corner % 2) * (2.0 * frac_x - 1.0)
                wy = (1.0 - frac_y) + (corner // 2) * (2.0 * frac_y - 1.0)
                # d wx / d x is -1 for the low corner and +1 for the high one
                dwx = (corner % 2) * 2.0 - 1.0
                dwy = (corner // 2) * 2.0 - 1.0
                inside = query_ok & (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
                token = (image * num_tokens + start + cy * width + cx).to(tl.int64)
                offsets = (token * HEADS + head)[:, None] * DIM + channel[None, :]
                tile_ok = inside[:, None] & channel_ok[None, :]
                corner_value = tl.load(value_ptr + offsets, mask=tile_ok, other=0.0).to(tl.float32)
                tl.atomic_add(
                    grad_value_ptr + offsets, (attn * wx * wy)[:, None] * grad_out, mask=tile_ok
                )
                dot = tl.reduce(grad_out * corner_value, 1, tl.standard._sum_combine)
                grad_attn += wx * wy * dot
                grad_x += dwx * wy * dot
                grad_y += wx * dwy * dot
            tl.store(grad_weight_ptr + sample, grad_attn, mask=query_ok)
            tl.store(grad_loc_ptr + 2 * sample, grad_x * attn * width, mask=query_ok)
            tl.store(grad_loc_ptr + 2 * sample + 1, grad_y * attn * height, mask=query_ok)
