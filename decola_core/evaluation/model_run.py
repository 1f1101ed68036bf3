"""A model-mode evaluation: run the recipe's model over a dataset (sharded over ranks, one
prediction shard per rank combined by streaming) and score the predictions."""

from __future__ import annotations

import logging
from pathlib import Path

from decola_core.data.catalog import DatasetCatalog
from decola_core.data.lvis import LvisDataset
from decola_core.engine.distributed import DistContext, barrier, init_distributed
from decola_core.errors import ConfigError
from decola_core.evaluation.runner import combine_shards, predict_shard, shard_range
from decola_core.evaluation.scoring import EvalReport, budgets, score_predictions
from decola_core.jobs import EvalJob
from decola_core.modeling.predictor import Predictor
from decola_core.utils.logs import log_file
from decola_core.utils.progress import progress_bar

log = logging.getLogger(__name__)


def run_model(job: EvalJob) -> EvalReport | None:
    """Predict with ``job.weights`` over the dataset and score (main process: the report)."""
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
    output_dir = job.output_dir or Path(recipe.resolved_output_dir()) / f"eval_{name}"
    with log_file(output_dir, enabled=context.is_main):  # the weight report goes in it too
        predictor = Predictor.from_recipe(
            recipe,
            job.weights,
            data_root=job.data_root,
            cache_dir=job.cache_dir,
            offline=job.offline,
            device=context.device,
            trusted=job.trust_weights,
            allow_embedding_mismatch=job.allow_embedding_mismatch,
        )
        predictor.max_detections = max(budgets(job, recipe.test.detections_per_image))
        return _predict_and_score(job, context, predictor, dataset, annotations, name, output_dir)


def _predict_and_score(
    job: EvalJob,
    context: DistContext,
    predictor: Predictor,
    dataset: LvisDataset,
    annotations: Path,
    name: str,
    output_dir: Path,
) -> EvalReport | None:
    recipe = job.recipe
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
