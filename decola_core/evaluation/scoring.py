"""Scoring a results file: AP at each budget (LVIS standard or fixed protocol, or COCO's),
written as ``metrics.json`` and a per-category CSV."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from decola_core.evaluation.lvis_eval import METRIC_KEYS, GroundTruth, evaluate, evaluate_coco
from decola_core.evaluation.predictions import Predictions
from decola_core.jobs import EvalJob
from decola_core.utils.io import atomic_open, atomic_write_text

if TYPE_CHECKING:  # annotations only: scoring a file needs no recipe
    from decola_core.config.schema import Recipe

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """Metrics per budget (one entry without ``k``), the protocol used and what was written."""

    results: dict[int, object]
    protocol: str
    conditioned_budgets: bool
    metrics_path: Path
    csv_path: Path
    predictions: Path
    lines: list[str] = field(default_factory=list)
    #: Mask AP per budget, when the predictions carry masks (written beside, ``*_segm.json``).
    segm_results: dict[int, object] = field(default_factory=dict)


def budgets(job: EvalJob, default: int) -> list[int]:
    return sorted(set(job.k)) if job.k else [job.max_dets or default]


def score_predictions(
    job: EvalJob,
    predictions: Path,
    annotations: Path,
    metrics_path: Path | None,
    *,
    recipe: Recipe | None = None,
    image_ids: list[int] | None = None,
) -> EvalReport:
    """AP of a results file at each budget (defaults from ``recipe`` when a model made it);
    writes metrics.json and the per-category CSV."""
    default_dets = recipe.test.detections_per_image if recipe is not None else 300
    per_class_cap = job.per_class_cap
    if per_class_cap is None:
        per_class_cap = recipe.test.detections_per_class_per_image if recipe is not None else -1
    truth = GroundTruth.load(annotations)
    if image_ids is not None and len(image_ids) < len(truth.image_ids):
        truth = truth.restrict(image_ids)
    preds = Predictions.load(predictions)
    log.info(
        f"scoring {len(preds):,} detections on {len(truth.image_ids):,} images "
        f"({job.protocol} protocol)"
    )
    protocol = job.protocol
    if protocol == "standard" and not all("frequency" in c for c in truth.data["categories"]):
        protocol = "coco"  # no LVIS frequency groups: a COCO-format set
        log.info("categories have no 'frequency': using the COCO protocol")
    results = {}
    for budget in budgets(job, default_dets):
        if protocol == "coco":
            results[budget] = evaluate_coco(truth, preds, max_dets=budget)
        else:
            results[budget] = evaluate(
                truth,
                preds,
                max_dets=budget,
                per_class_cap=per_class_cap,
                protocol=protocol,
                backend=job.backend,
            )
    metrics_path = metrics_path or predictions.with_name("metrics.json")
    csv_path = _write_outputs(results, truth, metrics_path, protocol)
    segm_results = _score_masks(job, predictions, truth, protocol, default_dets, metrics_path)
    if job.wandb:
        _log_wandb(results, job, recipe.name if recipe is not None else None)
    return EvalReport(
        results, protocol, bool(job.k), metrics_path, csv_path, predictions,
        segm_results=segm_results,
    )  # fmt: skip


def _score_masks(job, predictions: Path, truth, protocol: str, default_dets: int, metrics_path):
    """Mask AP (``<metrics>_segm.json``) when the predictions carry segmentations."""
    from decola_core.evaluation.segm_eval import evaluate_segm, read_mask_records

    records = read_mask_records(predictions)
    if records is None:
        return {}
    if protocol == "fixed":
        log.info("mask AP: the fixed protocol is box-only; masks scored with 'standard'")
        protocol = "standard"
    log.info(f"scoring {len(records):,} masks ({protocol} protocol)")
    backend = "lvis-api" if job.backend == "lvis-api" else "decola"
    results = {
        budget: evaluate_segm(truth, records, max_dets=budget, protocol=protocol, backend=backend)
        for budget in budgets(job, default_dets)
    }
    _write_outputs(
        results, truth, metrics_path.with_name(metrics_path.stem + "_segm.json"), protocol
    )
    return results


def _write_outputs(results, truth, metrics_path: Path, protocol: str) -> Path:
    def flat(result):
        return {key: result.metrics[key] for key in METRIC_KEYS if key in result.metrics}

    if len(results) == 1:
        payload = {**flat(next(iter(results.values()))), "protocol": protocol}
    else:
        payload = {"protocol": protocol, "k": {str(b): flat(r) for b, r in results.items()}}
    atomic_write_text(metrics_path, json.dumps(payload, indent=2, allow_nan=True) + "\n")
    names = {c["id"]: (c.get("name", ""), c.get("frequency", "")) for c in truth.data["categories"]}
    csv_path = metrics_path.with_name(metrics_path.stem + "_per_category.csv")
    with atomic_open(csv_path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category_id", "name", "frequency", *(f"AP@{b}" for b in results)])
        for cat in truth.category_ids:
            name, freq = names[int(cat)]
            writer.writerow(
                [
                    int(cat),
                    name,
                    freq,
                    *(f"{r.per_category[int(cat)]:.4f}" for r in results.values()),
                ]
            )
    return csv_path


def _log_wandb(results, job: EvalJob, recipe_name: str | None) -> None:
    import wandb  # slow to import; only when asked for

    run = wandb.init(
        project="decola",
        name=f"eval-{recipe_name or 'predictions'}",
        job_type="eval",
        dir=str(job.output_dir or Path.cwd()),
    )
    for budget, result in results.items():
        run.log({f"eval@{budget}/{k}": v for k, v in result.metrics.items()})
    run.finish()
