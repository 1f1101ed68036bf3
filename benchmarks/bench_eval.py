"""decola's LVIS evaluator against the lvis-api on an LVIS-val-sized synthetic set, same run.

Defaults: 20 000 images, 1 203 categories, 300 detections per image (6 M detections). Prints
both times, the speed-up and the largest metric difference (expected 0).

    python benchmarks/bench_eval.py [--images 20000] [--dets 300] [--skip-reference]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def synthetic(num_images: int, num_categories: int, dets_per_image: int, seed: int = 0):
    """Vectorised LVIS-like ground truth and detections (records as the evaluators take them)."""
    rng = np.random.default_rng(seed)
    freqs = np.array(["r", "c", "f"])[rng.integers(0, 3, num_categories)]
    categories = [
        {"id": c + 1, "name": f"c{c + 1}", "frequency": str(freqs[c])}
        for c in range(num_categories)
    ]
    widths = rng.integers(300, 640, num_images)
    heights = rng.integers(300, 640, num_images)
    gt_per_image = rng.integers(0, 12, num_images)
    gt_image = np.repeat(np.arange(num_images), gt_per_image)
    gt_cat = rng.integers(1, num_categories + 1, gt_image.size)
    gt_wh = rng.uniform(8, 200, (gt_image.size, 2))
    gt_xy = (
        rng.uniform(0, 1, (gt_image.size, 2))
        * np.stack([widths[gt_image], heights[gt_image]], 1)
        * 0.6
    )
    images = [
        {
            "id": int(i + 1),
            "width": int(widths[i]),
            "height": int(heights[i]),
            "neg_category_ids": rng.integers(1, num_categories + 1, 5).tolist(),
            "not_exhaustive_category_ids": [],
        }
        for i in range(num_images)
    ]
    annotations = [
        {
            "id": int(k + 1),
            "image_id": int(gt_image[k] + 1),
            "category_id": int(gt_cat[k]),
            "bbox": [*gt_xy[k].tolist(), *gt_wh[k].tolist()],
            "area": float(gt_wh[k].prod() * 0.8),
        }
        for k in range(gt_image.size)
    ]
    n = num_images * dets_per_image
    det_image = np.repeat(np.arange(num_images), dets_per_image)
    near = rng.random(n) < 0.5
    pick = rng.integers(0, max(gt_image.size, 1), n)
    has_gt = gt_per_image[det_image] > 0
    near &= has_gt
    xy = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(8, 200, (n, 2))
    cat = rng.integers(1, num_categories + 1, n)
    # detections "near" a GT box of their own image
    first_gt = np.concatenate([[0], np.cumsum(gt_per_image)[:-1]])
    own = first_gt[det_image] + pick % np.maximum(gt_per_image[det_image], 1)
    xy[near] = gt_xy[own[near]] * rng.uniform(0.9, 1.1, (near.sum(), 2))
    wh[near] = gt_wh[own[near]] * rng.uniform(0.8, 1.2, (near.sum(), 2))
    cat[near] = gt_cat[own[near]]
    score = np.round(rng.random(n), 3)
    detections = [
        {
            "image_id": int(det_image[k] + 1),
            "category_id": int(cat[k]),
            "bbox": [*xy[k].tolist(), *wh[k].tolist()],
            "score": float(score[k]),
        }
        for k in range(n)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--categories", type=int, default=1203)
    parser.add_argument("--dets", type=int, default=300)
    parser.add_argument(
        "--skip-reference", action="store_true", help="only time decola's evaluator"
    )
    args = parser.parse_args()
    from decola_core.evaluation import METRIC_KEYS, GroundTruth, Predictions, evaluate

    start = time.perf_counter()
    gt, dets = synthetic(args.images, args.categories, args.dets)
    print(
        f"synthetic set: {args.images:,} images, {args.categories:,} categories, {len(dets):,} "
        f"detections ({time.perf_counter() - start:.0f} s to generate)"
    )
    truth, preds = GroundTruth(gt), Predictions.from_records(dets)
    start = time.perf_counter()
    ours = evaluate(truth, preds)
    ours_s = time.perf_counter() - start
    print(
        f"decola (vectorised):                       {ours_s:8.1f} s   AP {ours.metrics['AP']:.4f}"
    )
    if args.skip_reference:
        return
    start = time.perf_counter()
    reference = evaluate(truth, preds, backend="lvis-api")
    ref_s = time.perf_counter() - start
    diff = max(
        abs(ours.metrics[k] - reference.metrics[k])
        for k in METRIC_KEYS
        if np.isfinite(ours.metrics[k])
    )
    print(f"lvis-api (reference):{'':23s}{ref_s:8.1f} s   AP {reference.metrics['AP']:.4f}")
    print(f"speed-up: {ref_s / ours_s:.1f}x   largest metric difference: {diff:.2e}")


if __name__ == "__main__":
    main()
