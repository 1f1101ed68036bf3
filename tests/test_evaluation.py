"""LVIS AP equals the lvis-api to 1e-9 on randomised fixtures; fixed AP against a plain
computation; caps, validation and c-mAP."""

from __future__ import annotations

import numpy as np
import pytest

from decola_core.errors import DecolaError
from decola_core.evaluation import METRIC_KEYS, GroundTruth, Predictions, evaluate
from decola_core.evaluation.synthetic import synthetic_lvis


def same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-9


@pytest.mark.parametrize("backend", ["decola", "faster-coco-eval"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("max_dets", [300, 12])
def test_standard_protocol_equals_the_lvis_api(seed: int, max_dets: int, backend: str) -> None:
    gt, dets = synthetic_lvis(40, 25, 30, seed=seed)
    truth, preds = GroundTruth(gt), Predictions.from_records(dets)
    fast = evaluate(truth, preds, max_dets=max_dets, backend=backend)
    reference = evaluate(truth, preds, max_dets=max_dets, backend="lvis-api")
    for key in (*METRIC_KEYS, "AR@300"):
        assert same(fast.metrics[key], reference.metrics[key]), key
    for cat, ap in fast.per_category.items():
        assert same(ap, reference.per_category[cat])
    assert any(np.isfinite(v) and v > 0 for v in fast.metrics.values())


def test_fixed_protocol_equals_the_lvis_api_on_the_capped_set() -> None:
    gt, dets = synthetic_lvis(30, 8, 50, seed=11)
    truth, preds = GroundTruth(gt), Predictions.from_records(dets)
    fast = evaluate(truth, preds, protocol="fixed", fixed_per_class=30)
    reference = evaluate(truth, preds, protocol="fixed", fixed_per_class=30, backend="lvis-api")
    assert all(same(fast.metrics[k], reference.metrics[k]) for k in METRIC_KEYS)


def test_per_class_cap_equals_the_lvis_api() -> None:
    gt, dets = synthetic_lvis(30, 10, 40, seed=5)
    truth, preds = GroundTruth(gt), Predictions.from_records(dets)
    fast = evaluate(truth, preds, per_class_cap=2)
    reference = evaluate(truth, preds, per_class_cap=2, backend="lvis-api")
    assert all(same(fast.metrics[k], reference.metrics[k]) for k in METRIC_KEYS)
    assert fast.metrics["AP"] != evaluate(truth, preds).metrics["AP"]


def plain_average_precision(gt: dict, dets: list[dict], category: int) -> float:
    """A direct LVIS AP of one category over all areas (federated rules, 10 IoUs, 101 recalls)."""
    images = {img["id"]: img for img in gt["images"]}
    gts = {}
    for a in gt["annotations"]:
        if a["category_id"] == category:
            gts.setdefault(a["image_id"], []).append(a["bbox"])
    allowed = {i for i, img in images.items() if category in img["neg_category_ids"] or i in gts}
    cat_dets = [d for d in dets if d["category_id"] == category and d["image_id"] in allowed]
    cat_dets.sort(key=lambda d: -d["score"])  # stable
    num_gt = sum(len(v) for v in gts.values())
    if num_gt == 0:
        return float("nan")

    def iou(a, b):
        ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
        iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
        ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
        inter = iw * ih
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    aps = []
    for thr in np.linspace(0.5, 0.95, 10):
        used: dict[int, set[int]] = {}
        tp, fp = [], []
        for d in cat_dets:
            boxes = gts.get(d["image_id"], [])
            best, best_iou = -1, min(thr, 1 - 1e-10)
            for j, g in enumerate(boxes):
                if j in used.get(d["image_id"], set()):
                    continue
                value = iou(d["bbox"], g)
                if value >= best_iou:
                    best, best_iou = j, value
            if best >= 0:
                used.setdefault(d["image_id"], set()).add(best)
                tp.append(1), fp.append(0)
            elif category in images[d["image_id"]]["not_exhaustive_category_ids"]:
                continue
            else:
                tp.append(0), fp.append(1)
        tp_sum, fp_sum = np.cumsum(tp), np.cumsum(fp)
        recall = tp_sum / num_gt
        precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
        for i in range(len(precision) - 1, 0, -1):
            precision[i - 1] = max(precision[i - 1], precision[i])
        idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
        aps.append(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))
    return float(np.mean(aps))


def test_fixed_protocol_against_a_plain_computation() -> None:
    gt, dets = synthetic_lvis(25, 6, 60, seed=7)
    result = evaluate(
        GroundTruth(gt), Predictions.from_records(dets), protocol="fixed", fixed_per_class=40
    )
    # the fixed protocol: no per-image cap, the top 40 detections of each class overall
    kept = []
    for cat in {c["id"] for c in gt["categories"]}:
        mine = sorted((d for d in dets if d["category_id"] == cat), key=lambda d: -d["score"])
        kept += mine[:40]
    for cat in sorted({c["id"] for c in gt["categories"]}):
        expected = plain_average_precision(gt, kept, cat)
        got = (
            result.per_category[cat] / 100
            if np.isfinite(result.per_category[cat])
            else float("nan")
        )
        assert same(got, expected) or abs(got - expected) < 1e-9, cat


def test_caps_keep_ties_in_input_order() -> None:
    preds = Predictions.from_records(
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},
            {"image_id": 1, "category_id": 1, "bbox": [1, 1, 1, 1], "score": 0.5},
        ]
    )
    kept = preds.cap_per_image(2)
    assert kept.bbox[:, 0].tolist() == [0, 0, 0]  # image 1: 0.9 and the first 0.5; image 2 kept
    assert kept.category_id.tolist() == [1, 2, 1]
    assert len(preds.cap_per_image_class(1)) == 3 and len(preds.cap_per_class(1)) == 2


def test_bad_predictions_are_clear_errors(tmp_path) -> None:
    gt, dets = synthetic_lvis(5, 4, 3, seed=1)
    truth = GroundTruth(gt)
    with pytest.raises(DecolaError, match="image ids that are not in"):
        evaluate(truth, Predictions.from_records([{**dets[0], "image_id": 999}]))
    with pytest.raises(DecolaError, match="category ids that are not in"):
        evaluate(truth, Predictions.from_records([{**dets[0], "category_id": 77}]))
    with pytest.raises(DecolaError, match="malformed boxes"):
        evaluate(truth, Predictions.from_records([{**dets[0], "bbox": [0, 0, -1, 2]}]))
    with pytest.raises(DecolaError, match="needs image_id"):
        Predictions.from_records([{"image_id": 1}])
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(DecolaError, match="empty"):
        Predictions.load(empty)
    with pytest.raises(DecolaError, match="not an LVIS/COCO file"):
        GroundTruth({"images": []})


def test_coco_protocol_equals_pycocotools() -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from decola_core.evaluation.lvis_eval import evaluate_coco

    gt, dets = synthetic_lvis(30, 10, 20, seed=4)
    for a in gt["annotations"]:
        a["iscrowd"] = 0
    result = evaluate_coco(GroundTruth(gt), Predictions.from_records(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    for key, stat in zip(
        ("AP", "AP50", "AP75", "APs", "APm", "APl"), evaluator.stats[:6], strict=True
    ):
        assert same(result.metrics[key], stat * 100 if stat >= 0 else float("nan")), key
