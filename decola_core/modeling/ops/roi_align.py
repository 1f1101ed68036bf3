"""RoIAlign (torchvision's ``roi_align``, ``aligned=True``) whose CPU backward is fast.

torchvision's CPU kernel computes the backward pass one sample at a time on one thread; for
CenterNet2's cascade (thousands of RoIs per batch, three stages) that was half of a training
step. Here the bilinear weights of every sampling point are gathered once into a sparse
(RoI bins x feature pixels) matrix, so the forward pass is one sparse-dense product and the
backward pass its transpose. The values equal torchvision's (same sampling points, bounds and
clamping; only the order of the sums differs). On CUDA torchvision's kernel is used, and
``DECOLA_ROI_ALIGN=torchvision`` uses it everywhere (e.g. as a benchmark's baseline).
"""

from __future__ import annotations

import os
import warnings

import torch
from torchvision.ops import roi_align as torchvision_roi_align


def roi_align(
    features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float
) -> torch.Tensor:
    """(R, C, s, s) features of ``rois`` (R, 5: batch index, x1, y1, x2, y2) in ``features``
    (B, C, H, W); adaptive sampling (``sampling_ratio=0``), ``aligned=True``."""
    forced = os.environ.get("DECOLA_ROI_ALIGN", "auto") == "torchvision"
    if forced or features.device.type != "cpu" or len(rois) == 0:
        return torchvision_roi_align(features, rois, output_size, spatial_scale, 0, aligned=True)
    return _SparseRoIAlign.apply(features, rois, output_size, spatial_scale)


def _axis(v: torch.Tensor, size: int):
    """torchvision's bilinear rules along one axis: (in range, low, high, low weight, high
    weight) of sample coordinates ``v``."""
    valid = (v >= -1.0) & (v <= size)
    v = v.clamp(min=0)
    low = v.long()
    edge = low >= size - 1
    low = torch.where(edge, torch.full_like(low, size - 1), low)
    high = torch.where(edge, low, low + 1)
    v = torch.where(edge, low.to(v.dtype), v)
    frac = v - low
    return valid, low, high, 1 - frac, frac


def sampling_matrix(
    rois: torch.Tensor, output_size: int, spatial_scale: float, shape: torch.Size
) -> torch.Tensor:
    """The sparse (R * s * s, B * H * W) matrix of bilinear weights, each bin's averaged."""
    batch, _, height, width = shape
    s = output_size
    device, dtype = rois.device, rois.dtype
    image = rois[:, 0].long()
    x1, y1 = rois[:, 1] * spatial_scale - 0.5, rois[:, 2] * spatial_scale - 0.5
    bin_w = (rois[:, 3] * spatial_scale - 0.5 - x1) / s
    bin_h = (rois[:, 4] * spatial_scale - 0.5 - y1) / s
    grid_w, grid_h = torch.ceil(bin_w).long(), torch.ceil(bin_h).long()  # samples per bin
    inverse_count = 1.0 / (grid_h * grid_w).clamp(min=1).to(dtype)
    bins = torch.arange(s, device=device, dtype=dtype)
    cells = torch.arange(s * s, device=device).view(1, s, s, 1, 1)
    rows, cols, values = [], [], []
    for gh, gw in torch.unique(torch.stack([grid_h, grid_w], 1), dim=0).tolist():
        if gh <= 0 or gw <= 0:  # an empty RoI: no samples, zero features (as torchvision)
            continue
        sel = torch.nonzero((grid_h == gh) & (grid_w == gw)).squeeze(1)
        steps_y = (torch.arange(gh, device=device, dtype=dtype) + 0.5) / gh
        steps_x = (torch.arange(gw, device=device, dtype=dtype) + 0.5) / gw
        bh, bw = bin_h[sel, None, None], bin_w[sel, None, None]
        y = y1[sel, None, None] + bins[None, :, None] * bh + steps_y[None, None, :] * bh
        x = x1[sel, None, None] + bins[None, :, None] * bw + steps_x[None, None, :] * bw
        valid_y, y_low, y_high, w_y_low, w_y_high = _axis(y, height)
        valid_x, x_low, x_high, w_x_low, w_x_high = _axis(x, width)

        def along_y(t: torch.Tensor) -> torch.Tensor:  # (n, s, g) -> (n, s, 1, g, 1)
            return t[:, :, None, :, None]

        def along_x(t: torch.Tensor) -> torch.Tensor:  # (n, s, g) -> (n, 1, s, 1, g)
            return t[:, None, :, None, :]

        shape5 = (len(sel), s, s, gh, gw)
        row = (sel.view(-1, 1, 1, 1, 1) * (s * s) + cells).expand(shape5)
        base = (image[sel] * (height * width)).view(-1, 1, 1, 1, 1)
        scale = inverse_count[sel].view(-1, 1, 1, 1, 1) * (along_y(valid_y) & along_x(valid_x))
        for yy, wy in ((y_low, w_y_low), (y_high, w_y_high)):
            for xx, wx in ((x_low, w_x_low), (x_high, w_x_high)):
                rows.append(row.reshape(-1))
                cols.append((base + along_y(yy) * width + along_x(xx)).expand(shape5).reshape(-1))
                values.append((along_y(wy) * along_x(wx) * scale).expand(shape5).reshape(-1))
    size = (len(rois) * s * s, batch * height * width)
    if not rows:
        return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), [], size, device=device)
    rows_all, cols_all, values_all = torch.cat(rows), torch.cat(cols), torch.cat(values)
    keep = values_all != 0
    indices = torch.stack([rows_all[keep], cols_all[keep]])
    return torch.sparse_coo_tensor(indices, values_all[keep], size, check_invariants=False)


class _SparseRoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale):  # noqa: D102
        batch, channels, height, width = features.shape
        weights = sampling_matrix(rois.detach(), output_size, spatial_scale, features.shape)
        with warnings.catch_warnings():  # torch calls sparse CSR "beta"; its kernels are fine
            warnings.simplefilter("ignore", UserWarning)
            weights = weights.coalesce().to_sparse_csr()
            pixels = features.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
            pooled = weights @ pixels
        ctx.save_for_backward(weights)
        ctx.shape = features.shape
        s = output_size
        return pooled.view(len(rois), s, s, channels).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (weights,) = ctx.saved_tensors
        batch, channels, height, width = ctx.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            grad_pixels = weights.t() @ grad.permute(0, 2, 3, 1).reshape(-1, channels)
        features = grad_pixels.view(batch, height, width, channels).permute(0, 3, 1, 2)
        return features.contiguous(), None, None, None
