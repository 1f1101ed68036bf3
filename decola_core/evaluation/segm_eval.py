"""Mask AP of results that carry ``segmentation`` (RLE) fields: LVIS (the lvis-api's numbers,
computed by faster-coco-eval's LVIS mode, or by the lvis-api itself) and COCO."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from decola_core.errors import DecolaError
from decola_core.evaluation.lvis_eval import (
    EvalResult,
    GroundTruth,
    _lvis_ground_truth,
    _mean_valid,
    _overall_metrics,
    _percent,
    summarize,
)

#: How much of a results file is looked at to see whether its records carry masks.
PEEK_BYTES = 1 << 16


def read_mask_records(path: str | Path) -> list[dict[str, Any]] | None:
    """The result records of ``path`` if they carry masks (``segmentation``), else None.

    Box-only files are recognised from their first bytes, so scoring them reads them once."""
    import orjson

    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        return None
    with open(files[0], "rb") as handle:
        if b'"segmentation"' not in handle.read(PEEK_BYTES):
            return None
    records: list[dict[str, Any]] = []
    for file in files:
        raw = file.read_bytes()
        if file.suffix == ".jsonl":
            records += [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        else:
            records += orjson.loads(raw)
    if not records or "segmentation" not in records[0]:
        return None
    missing = sum("segmentation" not in r for r in records)
    if missing:
        raise DecolaError(f"{path}: {missing} of {len(records)} detections have no segmentation")
    return records


def _top_per_image(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` best-scoring records per image (the lvis-api's loading step)."""
    if limit < 0:
        return records
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_image.setdefault(r["image_id"], []).append(r)
    kept = []
    for rows in by_image.values():
        rows.sort(key=lambda r: -r["score"])
        kept += rows[:limit]
    return kept


def evaluate_segm(
    gt: GroundTruth,
    records: list[dict[str, Any]],
    *,
    max_dets: int = 300,
    protocol: str = "standard",
    backend: str = "decola",
) -> EvalResult:
    """Mask AP of ``records`` (RLE ``segmentation``) against ``gt``'s polygons or RLEs."""
    if any("segmentation" not in a for a in gt.data["annotations"]):
        raise DecolaError(f"{gt.source}: annotations have no 'segmentation'; cannot score masks")
    if protocol == "coco":
        return _coco(gt, records, max_dets)
    if protocol != "standard":
        raise DecolaError(f"mask AP supports the standard and COCO protocols (got '{protocol}')")
    kept = _top_per_image(records, max_dets)
    if backend == "lvis-api":
        precision, recall = _lvis_api_segm(gt, kept, max_dets)
    else:
        precision, recall = _faster_segm(gt, kept, max_dets, lvis_style=True)
    metrics = summarize(precision, recall, gt)
    per_category = {
        int(c): _percent(_mean_valid(precision[:, :, k, 0])) for k, c in enumerate(gt.category_ids)
    }
    return EvalResult(metrics, per_category, protocol, max_dets)


def _faster_segm(gt: GroundTruth, records, limit: int, *, lvis_style: bool):
    from faster_coco_eval import COCO, COCOeval_faster

    data = {**gt.data, "annotations": [{"iscrowd": 0, **a} for a in gt.data["annotations"]]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(data)
        coco_dt = coco_gt.loadRes(records) if records else COCO()
        evaluator = COCOeval_faster(
            coco_gt, coco_dt, iouType="segm", lvis_style=lvis_style,
            print_function=lambda *a, **k: None,
        )  # fmt: skip
        evaluator.params.maxDets = [limit] if lvis_style else [1, 10, limit]
        evaluator.params.catIds = [int(c) for c in gt.category_ids]
        evaluator.params.imgIds = [int(i) for i in gt.image_ids]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][..., -1], evaluator.eval["recall"][..., -1]


def _coco(gt: GroundTruth, records, max_dets: int) -> EvalResult:
    precision, _ = _faster_segm(gt, records, max_dets, lvis_style=False)
    metrics = {k: _percent(v) for k, v in _overall_metrics(precision).items()}
    per_category = {
        int(c): _percent(_mean_valid(precision[:, :, k, 0])) for k, c in enumerate(gt.category_ids)
    }
    return EvalResult(metrics, per_category, "coco", max_dets)


def _lvis_api_segm(gt: GroundTruth, records, limit: int):
    """The reference: the lvis-api itself."""
    from lvis import LVISEval, LVISResults

    with _lvis_ground_truth(gt) as lvis_gt:
        lvis_dt = LVISResults(lvis_gt, records, max_dets=limit)
        evaluator = LVISEval(lvis_gt, lvis_dt, iou_type="segm")
        evaluator.params.max_dets = limit
        evaluator.run()
    return evaluator.eval["precision"], evaluator.eval["recall"]
