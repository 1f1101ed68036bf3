"""Random LVIS-format ground truth and detections, for parity tests and benchmarks."""

from __future__ import annotations

from typing import Any

import numpy as np


def synthetic_lvis(
    num_images: int,
    num_categories: int,
    dets_per_image: int,
    seed: int = 0,
    max_gt_per_image: int = 8,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(ground truth, detections): rare/common/frequent classes, negative and not-exhaustive
    lists, images without boxes, scores with ties, detections of absent classes."""
    rng = np.random.default_rng(seed)
    freqs = np.array(["r", "c", "f"])[rng.integers(0, 3, num_categories)]
    categories = [
        {"id": c + 1, "name": f"c{c + 1}", "frequency": str(freqs[c])}
        for c in range(num_categories)
    ]
    images, annotations = [], []
    for i in range(num_images):
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 640))
        n_gt = int(rng.integers(0, max_gt_per_image + 1)) if rng.random() > 0.1 else 0
        present = (
            rng.choice(num_categories, size=min(n_gt, num_categories), replace=False) + 1
            if n_gt
            else []
        )
        for c in present:
            for _ in range(int(rng.integers(1, 3))):
                bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
                x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": int(c),
                        "bbox": [x, y, bw, bh],
                        "area": bw * bh * rng.uniform(0.5, 1.0),
                    }
                )
        absent = np.setdiff1d(np.arange(1, num_categories + 1), present)
        neg = rng.choice(absent, size=min(len(absent), int(rng.integers(0, 6))), replace=False)
        not_exh = (
            rng.choice(present, size=int(rng.integers(0, len(present) + 1)), replace=False)
            if len(present)
            else []
        )
        images.append(
            {
                "id": i + 1,
                "width": w,
                "height": h,
                "neg_category_ids": [int(c) for c in neg],
                "not_exhaustive_category_ids": [int(c) for c in not_exh],
            }
        )
    gt = {"images": images, "annotations": annotations, "categories": categories}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    detections = []
    for img in images:
        w, h = img["width"], img["height"]
        anns = by_image.get(img["id"], [])
        candidates = [a["category_id"] for a in anns] + img["neg_category_ids"]
        for _ in range(dets_per_image if rng.random() > 0.05 else 0):
            if anns and rng.random() < 0.5:  # near a GT box
                a = anns[int(rng.integers(len(anns)))]
                x, y, bw, bh = (np.array(a["bbox"]) * rng.uniform(0.8, 1.2, 4)).tolist()
                cat = (
                    a["category_id"]
                    if rng.random() < 0.8
                    else int(rng.integers(1, num_categories + 1))
                )
            else:
                bw, bh = rng.uniform(2, w / 2), rng.uniform(2, h / 2)
                x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                cat = (
                    int(rng.choice(candidates))
                    if candidates and rng.random() < 0.7
                    else int(rng.integers(1, num_categories + 1))
                )
            score = float(np.round(rng.random(), 2))  # rounded: many ties
            detections.append(
                {
                    "image_id": img["id"],
                    "category_id": int(cat),
                    "bbox": [x, y, bw, bh],
                    "score": score,
                }
            )
    return gt, detections
