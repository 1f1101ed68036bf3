"""Mask AP: equal to the lvis-api's on randomised fixtures; ``decola eval`` scores masks as
well as boxes when the results carry segmentations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from decola_core.evaluation.lvis_eval import GroundTruth
from decola_core.evaluation.segm_eval import evaluate_segm
from decola_core.evaluation.synthetic import synthetic_lvis
from decola_core.structures.masks import mask_rle


def _ellipse(x: float, y: float, w: float, h: float) -> list[float]:
    angles = np.arange(16) * 2 * math.pi / 16
    points = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], 1)
    return points.reshape(-1).round(2).tolist()


def with_masks(seed: int) -> tuple[dict, list[dict]]:
    """Synthetic LVIS boxes plus elliptic polygon GT and jittered elliptic RLE detections."""
    from pycocotools import mask as mask_util

    gt, dets = synthetic_lvis(12, 6, 15, seed=seed)
    rng = np.random.default_rng(seed)
    for a in gt["annotations"]:
        a["segmentation"] = [_ellipse(*a["bbox"])]
    sizes = {i["id"]: (i["height"], i["width"]) for i in gt["images"]}
    for d in dets:
        h, w = sizes[d["image_id"]]
        x, y, bw, bh = d["bbox"]
        shrink = rng.uniform(0.7, 1.0)
        polygon = _ellipse(x, y, max(bw * shrink, 1.0), max(bh * shrink, 1.0))
        rle = mask_util.merge(mask_util.frPyObjects([polygon], h, w))
        d["segmentation"] = mask_rle(mask_util.decode(rle).astype(bool))
    return gt, dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_ap_equals_the_lvis_api(seed: int) -> None:
    gt_data, dets = with_masks(seed)
    gt = GroundTruth(gt_data)
    fast = evaluate_segm(gt, dets, max_dets=300)
    reference = evaluate_segm(gt, dets, max_dets=300, backend="lvis-api")
    assert fast.metrics["AP"] > 0
    for key, value in reference.metrics.items():
        assert fast.metrics[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    shifted = [{**d, "segmentation": dets[(i + 1) % len(dets)]["segmentation"]} for i, d in
               enumerate(dets)]  # fmt: skip
    assert evaluate_segm(gt, shifted, max_dets=300).metrics["AP"] < fast.metrics["AP"]


def test_eval_scores_masks_and_boxes(decola, tmp_path: Path) -> None:
    gt, dets = with_masks(3)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    result = decola(
        "eval", "--predictions", str(tmp_path / "dets.json"),
        "--annotations", str(tmp_path / "gt.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mask AP" in result.stdout and "box AP" in result.stdout
    written = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json")
    segm = json.loads((tmp_path / "metrics_segm.json").read_text())
    reference = evaluate_segm(GroundTruth(gt), dets, max_dets=300, backend="lvis-api")
    assert segm["AP"] == pytest.approx(reference.metrics["AP"], abs=1e-6)
    assert "metrics.json" in written


def test_coco_mask_ap_equals_pycocotools() -> None:
    """A COCO-format set (no LVIS frequencies): mask AP as pycocotools' COCOeval gives it."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_data, dets = with_masks(4)
    for c in gt_data["categories"]:
        c.pop("frequency")
    for a in gt_data["annotations"]:
        a["iscrowd"] = 0
    ours = evaluate_segm(GroundTruth(gt_data), dets, max_dets=100, protocol="coco")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_data
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert ours.metrics["AP"] == pytest.approx(evaluator.stats[0] * 100, abs=1e-6)
    assert ours.metrics["AP50"] == pytest.approx(evaluator.stats[1] * 100, abs=1e-6)
