"""LVIS box AP (AP, AP50, AP75, APs/m/l, APr/c/f) equal to the lvis-api, computed fast.

The work is done by faster-coco-eval's LVIS mode, which gives the lvis-api's numbers once the
detections are cut to the top ``max_dets`` per image across categories, the step the lvis-api
performs when it loads results. The lvis-api itself stays available as the reference backend
(``backend="lvis-api"``, made to run on NumPy 2).

Protocols: ``standard`` (top 300 per image, optional per-(image, class) cap) and ``fixed``
(Dave et al.: no per-image cap, top 10 000 detections per class over the whole dataset).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decola_core.errors import DecolaError
from decola_core.evaluation.fast_lvis import lvis_precision_recall
from decola_core.evaluation.predictions import Predictions
from decola_core.utils.io import read_json_file

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
FREQUENCIES = ("r", "c", "f")
FIXED_AP_PER_CLASS = 10000
AREA_LABELS = ("all", "small", "medium", "large")


@dataclass
class EvalResult:
    """Metrics in percent (like the published tables), per-category AP, and the protocol."""

    metrics: dict[str, float]
    per_category: dict[int, float] = field(
        default_factory=dict
    )  # category id -> AP (%), nan if none
    protocol: str = "standard"
    max_dets: int = 300


class GroundTruth:
    """An LVIS-format annotation file, read once and shared by evaluations."""

    def __init__(self, data: dict[str, Any], source: str = "annotations") -> None:
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DecolaError(f"{source}: not an LVIS/COCO file (no '{key}' list)")
        self.data, self.source = data, source
        self.image_ids = np.array(sorted(img["id"] for img in data["images"]), dtype=np.int64)
        self.category_ids = np.array(sorted(c["id"] for c in data["categories"]), dtype=np.int64)
        self.frequency = {c["id"]: c.get("frequency") for c in data["categories"]}

    def restrict(self, image_ids) -> GroundTruth:
        """The same ground truth on a subset of the images."""
        keep = {int(i) for i in image_ids}
        data = {
            **self.data,
            "images": [img for img in self.data["images"] if img["id"] in keep],
            "annotations": [a for a in self.data["annotations"] if a["image_id"] in keep],
        }
        return GroundTruth(data, f"{self.source} ({len(keep)} images)")

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        path = Path(path)
        data = read_json_file(path)
        if not isinstance(data, dict):
            raise DecolaError(f"{path}: expected a JSON object")
        return cls(data, str(path))


def evaluate(
    gt: GroundTruth,
    predictions: Predictions,
    *,
    max_dets: int = 300,
    per_class_cap: int = -1,
    protocol: str = "standard",
    backend: str = "decola",
    fixed_per_class: int = FIXED_AP_PER_CLASS,
) -> EvalResult:
    """LVIS box AP of ``predictions`` against ``gt``.

    ``standard``: at most ``max_dets`` per image (after an optional ``per_class_cap`` per
    image and class). ``fixed``: no per-image cap, the top ``fixed_per_class`` per class.
    """
    predictions.check_against(gt.image_ids, gt.category_ids, gt.source)
    if protocol == "standard":
        kept = predictions.cap_per_image_class(per_class_cap).cap_per_image(max_dets)
        limit = max_dets
    elif protocol == "fixed":
        kept = predictions.cap_per_class(fixed_per_class)
        limit = -1
    else:
        raise DecolaError(f"unknown protocol '{protocol}' (standard or fixed)")
    if backend == "decola":
        precision, recall = lvis_precision_recall(
            gt.data,
            gt.image_ids,
            gt.category_ids,
            kept.image_id,
            kept.category_id,
            kept.bbox,
            kept.score,
        )
    elif backend == "faster-coco-eval":
        precision, recall = _faster_coco_eval(gt, kept, limit)
    elif backend == "lvis-api":
        precision, recall = _lvis_api(gt, kept, limit)
    else:
        raise DecolaError(
            f"unknown evaluation backend '{backend}' (decola, faster-coco-eval or lvis-api)"
        )
    metrics = summarize(precision, recall, gt)
    per_category = {
        int(cat): _percent(_mean_valid(precision[:, :, k, 0]))
        for k, cat in enumerate(gt.category_ids)
    }
    return EvalResult(metrics, per_category, protocol, max_dets if protocol == "standard" else -1)


COCO_METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def evaluate_coco(gt: GroundTruth, predictions: Predictions, *, max_dets: int = 100) -> EvalResult:
    """COCO box AP (pycocotools' protocol: no federated rules, ``max_dets`` per image and class,
    crowd boxes ignored) for COCO-format sets such as Objects365."""
    from faster_coco_eval import COCO, COCOeval_faster

    predictions.check_against(gt.image_ids, gt.category_ids, gt.source)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(
            {**gt.data, "annotations": [{"iscrowd": 0, **a} for a in gt.data["annotations"]]}
        )
        coco_dt = coco_gt.loadRes(predictions.to_records()) if len(predictions) else COCO()
        evaluator = COCOeval_faster(
            coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None
        )
        evaluator.params.maxDets = [1, 10, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][..., -1]  # (T, R, K, A) at max_dets
    metrics = _overall_metrics(precision)
    per_category = {
        int(c): _percent(_mean_valid(precision[:, :, k, 0])) for k, c in enumerate(gt.category_ids)
    }
    return EvalResult({k: _percent(v) for k, v in metrics.items()}, per_category, "coco", max_dets)


def summarize(precision: np.ndarray, recall: np.ndarray, gt: GroundTruth) -> dict[str, float]:
    """The lvis-api's summary, in percent. precision: (T, R, K, A); recall: (T, K, A)."""
    groups = {
        f: [k for k, c in enumerate(gt.category_ids) if gt.frequency[c] == f] for f in FREQUENCIES
    }
    metrics = _overall_metrics(precision)
    for f in FREQUENCIES:
        metrics[f"AP{f}"] = _mean_valid(precision[:, :, groups[f], 0])
    metrics["AR@300"] = _mean_valid(recall[..., 0])
    return {k: _percent(v) for k, v in metrics.items()}


def _percent(value: float) -> float:
    """Percent, or nan for the lvis-api's -1 (nothing to evaluate)."""
    return value * 100 if value >= 0 else float("nan")


def _overall_metrics(precision: np.ndarray) -> dict[str, float]:
    """AP, AP50, AP75 and APs/m/l (fractions, -1 when empty) from (T, R, K, A) precision."""
    thresholds = np.linspace(0.5, 0.95, 10)
    return {
        "AP": _mean_valid(precision[..., 0]),
        "AP50": _mean_valid(precision[np.isclose(thresholds, 0.5)][..., 0]),
        "AP75": _mean_valid(precision[np.isclose(thresholds, 0.75)][..., 0]),
        "APs": _mean_valid(precision[..., 1]),
        "APm": _mean_valid(precision[..., 2]),
        "APl": _mean_valid(precision[..., 3]),
    }


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _faster_coco_eval(gt: GroundTruth, preds: Predictions, limit: int):
    from faster_coco_eval import COCO, COCOeval_faster

    data = dict(gt.data)
    data["annotations"] = [
        {**a, "iscrowd": a.get("iscrowd", 0)} if "iscrowd" not in a else a
        for a in gt.data["annotations"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(data)
        coco_dt = coco_gt.loadRes(preds.to_records()) if len(preds) else COCO()
        evaluator = COCOeval_faster(
            coco_gt, coco_dt, iouType="bbox", lvis_style=True, print_function=lambda *a, **k: None
        )
        # per (image, class) limit; without a per-image cap, anything >= the detection count
        evaluator.params.maxDets = [limit if limit > 0 else max(1, len(preds))]
        evaluator.params.catIds = [int(c) for c in gt.category_ids]
        evaluator.params.imgIds = [int(i) for i in gt.image_ids]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][..., -1]  # (T, R, K, A) at the single maxDets
    recall = evaluator.eval["recall"][..., -1]
    return precision, recall


@contextlib.contextmanager
def _lvis_ground_truth(gt: GroundTruth):
    """The lvis-api's LVIS object of ``gt``, quiet (np.float restored for NumPy >= 1.24)."""
    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]  # lvis-api 0.5.3 uses the removed alias
    import logging

    from lvis import LVIS

    logging.getLogger("lvis").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lvis_gt = LVIS.__new__(LVIS)
        lvis_gt.logger = _QuietLogger()
        lvis_gt.dataset = gt.data
        lvis_gt._create_index()
        yield lvis_gt


def _lvis_api(gt: GroundTruth, preds: Predictions, limit: int):
    """The reference: the lvis-api itself."""
    from lvis import LVISEval, LVISResults

    with _lvis_ground_truth(gt) as lvis_gt:
        lvis_dt = LVISResults(lvis_gt, preds.to_records(), max_dets=limit)
        evaluator = LVISEval(lvis_gt, lvis_dt, iou_type="bbox")
        evaluator.params.max_dets = limit
        evaluator.run()
    return evaluator.eval["precision"], evaluator.eval["recall"]


class _QuietLogger:
    def info(self, *args, **kwargs) -> None:
        pass

    warn = warning = info
