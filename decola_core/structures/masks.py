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


def polygon_masks(polygons: list[list[np.ndarray]], height: int, width: int) -> torch.Tensor:
    """(n, H, W) bool: each instance's polygons (flat x, y in pixels) rasterised by pycocotools
    (the union of its polygons)."""
    from pycocotools import mask as mask_util

    masks = torch.zeros((len(polygons), height, width), dtype=torch.bool)
    for i, instance in enumerate(polygons):
        if len(instance):
            rles = mask_util.frPyObjects(
                [np.asarray(p, np.float64) for p in instance], height, width
            )
            masks[i] = torch.from_numpy(mask_util.decode(mask_util.merge(rles)).astype(bool))
    return masks
