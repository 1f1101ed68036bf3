"""``run_evaluation(job)``: what ``decola eval`` (and ``decola train --eval-only``) does — score a
results file, or run a model over a dataset (sharded over ranks) and score its predictions —
writing ``metrics.json`` and a per-category CSV."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from decola_core.config.schema import Recipe
from decola_core.data.catalog import DatasetCatalog
from decola_core.data.lvis import LvisDataset
from decola_core.engine.distributed import barrier, init_distributed
from decola_core.errors import ConfigError
from decola_core.evaluation.lvis_eval import METRIC_KEYS, GroundTruth, evaluate, evaluate_coco
from decola_core.evaluation.predictions import Predictions
from decola_core.evaluation.runner import combine_shards, predict_shard, shard_range
from decola_core.jobs import EvalJob
from decola_core.modeling.predictor import Predictor
from decola_core.utils.io import atomic_open, atomic_write_text
from decola_core.utils.logs import log_file
from decola_core.utils.progress import progress_bar

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


def run_evaluation(job: EvalJob) -> EvalReport | None:
    """Score a results file or run a model and score it; the report on the main process.
    A model run writes ``log.txt`` beside its predictions."""
    if job.predictions is not None:
        if job.annotations is None:
            raise ConfigError("--predictions needs --annotations (the ground truth)")
        return score_predictions(job, job.predictions, job.annotations, job.output)
    if job.weights is None or job.recipe is None:
        raise ConfigError(
            "give --predictions FILE to score a results file, or --weights to run a model"
        )
    return _run_model(job)


def _budgets(job: EvalJob, default: int) -> list[int]:
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
    for budget in _budgets(job, default_dets):
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
    if job.wandb:
        _log_wandb(results, job, recipe.name if recipe is not None else None)
    return EvalReport(results, protocol, bool(job.k), metrics_path, csv_path, predictions)


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


def _run_model(job: EvalJob) -> EvalReport | None:
    recipe = job.recipe
    context = init_distributed()
    if job.annotations is not None:
        if job.images is None:
            raise ConfigError("--annotations in model mode needs --images DIR")
        annotations, image_root, name = job.annotations, job.images, job.annotations.stem
    else:
        name = job.eval_dataset or (recipe.data.test[0] if recipe.data.test else None)
        if name is None:
            raise ConfigError(
                "the recipe has no test set; pass --eval-dataset NAME or --annotations"
            )
        resolved = DatasetCatalog(job.data_root, recipe.data.datasets).get(name)
        annotations, image_root = resolved.annotations, resolved.image_root
    dataset = LvisDataset(annotations, image_root)
    if len(dataset.category_ids) != recipe.model.classifier.num_classes:
        raise ConfigError(
            f"{annotations} has {len(dataset.category_ids)} categories but the recipe's "
            f"classifier has {recipe.model.classifier.num_classes}"
        )
    predictor = Predictor.from_recipe(
        recipe,
        job.weights,
        data_root=job.data_root,
        cache_dir=job.cache_dir,
        offline=job.offline,
        device=context.device,
        trusted=job.trust_weights,
    )
    predictor.max_detections = max(_budgets(job, recipe.test.detections_per_image))
    output_dir = job.output_dir or Path(recipe.resolved_output_dir()) / f"eval_{name}"
    with log_file(output_dir, enabled=context.is_main):
        return _predict_and_score(job, recipe, predictor, dataset, annotations, name, output_dir)


def _predict_and_score(job, recipe, predictor, dataset, annotations, name, output_dir):
    context = init_distributed()
    oracle = job.conditioned if job.conditioned is not None else recipe.test.oracle
    # test.conditioned without the oracle: class mode prompted with every class (in chunks)
    every_class = not oracle and recipe.test.conditioned
    total = min(len(dataset), job.max_images or len(dataset))
    indices = shard_range(total, context.rank, context.world_size)
    shard = output_dir / "shards" / f"rank{context.rank:03d}.jsonl"
    if context.is_main:
        log.info(
            f"evaluating {recipe.name} ({job.weights}) on {name}: {total:,} images, "
            f"{'conditioned on GT classes' if oracle else 'all classes'}"
            f"{' (class mode)' if every_class else ''}, "
            f"{context.world_size} process(es) -> {output_dir}"
        )
    with progress_bar("img", disable=not context.is_main) as bar:
        task = bar.add_task("inference", total=len(indices))
        stats = predict_shard(
            predictor,
            dataset,
            shard,
            conditioned=oracle,
            prompt_every_class=every_class,
            indices=indices,
            max_bad_images=job.max_bad_images,
            on_image=lambda: bar.advance(task),
        )
    barrier()
    if not context.is_main:
        return None
    shards = sorted((output_dir / "shards").glob("rank*.jsonl"))[: context.world_size]
    predictions = output_dir / "predictions.json"
    count = combine_shards(shards, predictions)
    log.info(
        f"{count:,} detections from {total:,} images ({stats.bad_images} unreadable on rank 0) "
        f"-> {predictions}"
    )
    if not any(len(r.classes) for r in dataset.records[:total]):
        log.info("the dataset has no boxes: predictions written, nothing to score")
        return None
    return score_predictions(
        job,
        predictions,
        annotations,
        output_dir / "metrics.json",
        recipe=recipe,
        image_ids=[r.image_id for r in dataset.records[:total]],
    )
