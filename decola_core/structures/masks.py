"""Instance masks as COCO run-length encodings (the LVIS/COCO results format)."""

from __future__ import annotations

import numpy as np
import torch


def mask_rle(mask: torch.Tensor | np.ndarray) -> dict:
    """COCO RLE of an (H, W) bool mask with string counts (JSON-ready)."""
    from pycocotools import mask as mask_util

    array = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rle = mask_util.encode(np.asfortranarray(array.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
