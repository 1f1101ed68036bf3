"""``decola eval``: LVIS AP, fixed AP and conditioned mAP@k, of a model or of a results file."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from decola_cli import options
from decola_cli.console import err, out
from decola_cli.settings import EvalSettings, build_settings

EPILOG = """[bold]Examples[/]

  decola eval --predictions results.json --annotations datasets/lvis/lvis_v1_val.json
  decola eval --predictions results.json --annotations val.json --protocol fixed
  decola eval --phase 1 --weights decola-phase1-lbase-r50 --dataset lvis_v1_val \\
      --conditioned --k 10 20 50 100 300
  decola eval --config toy/DECOLA_PHASE1_Toy --weights output/toy/model_final.pth --dataset toy_val
"""


def eval_command(
    predictions: Annotated[
        Path | None,
        typer.Option(help="Score this results file (JSON array, .jsonl or shard folder)."),
    ] = None,
    annotations: Annotated[Path | None, typer.Option(help="LVIS/COCO-format ground truth.")] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder for --annotations (model mode).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="Catalog set to evaluate on (e.g. lvis_v1_val) (default: the recipe's test set); "
            "lvis | lvis-base | toy select the recipe instead.",
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", "-w", help="Checkpoint path or zoo name (model mode)."),
    ] = None,
    config: options.ConfigOption = None,
    phase: options.PhaseOption = None,
    backbone: options.BackboneOption = None,
    baseline: options.BaselineOption = None,
    overrides: options.SetOption = None,
    conditioned: Annotated[
        bool | None,
        typer.Option(
            "--conditioned/--no-conditioned",
            help="Prompt each image with its GT classes (c-mAP) (default: the recipe's).",
        ),
    ] = None,
    k: Annotated[
        list[int] | None,
        typer.Option("--k", help="c-mAP budgets: detections per image, e.g. --k 10 20 50 100 300."),
    ] = None,
    max_dets: Annotated[
        int | None, typer.Option(help="Detections per image (default: recipe's, 300).")
    ] = None,
    per_class_cap: Annotated[
        int, typer.Option(help="Detections per (image, class); -1 = none.")
    ] = -1,
    protocol: Annotated[
        str,
        typer.Option(help="standard | fixed (top 10 000 per class, no per-image cap) | coco."),
    ] = "standard",
    backend: Annotated[
        str, typer.Option(help="decola | faster-coco-eval | lvis-api (the slow reference).")
    ] = "decola",
    num_gpus: Annotated[
        int, typer.Option(min=1, help="Worker processes (GPUs) for model mode.")
    ] = 1,
    output_dir: Annotated[
        Path | None,
        typer.Option(help="Where predictions and metrics go (default: <recipe output>/eval)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="metrics.json path (scoring mode).")
    ] = None,
    max_images: Annotated[
        int | None, typer.Option(help="Only the first N images (quick checks).")
    ] = None,
    max_bad_images: Annotated[
        int, typer.Option(help="Unreadable images to skip before failing.")
    ] = 0,
    wandb: Annotated[
        bool, typer.Option("--wandb/--no-wandb", help="Log the metrics to W&B.")
    ] = False,
    data_root: options.DataRootOption = None,
    cache_dir: options.CacheDirOption = None,
) -> None:
    """Evaluate LVIS box AP (AP, AP50, AP75, APs/m/l, APr/c/f) or conditioned mAP@k."""
    from decola_core.config.shorthand import DATASET_TOKENS

    recipe_dataset = dataset if dataset in (*DATASET_TOKENS, "toy") else None
    settings = build_settings(
        EvalSettings,
        predictions=predictions,
        annotations=annotations,
        images=images,
        eval_dataset=None if recipe_dataset else dataset,
        weights=weights,
        config=config,
        phase=phase,
        dataset=recipe_dataset,
        backbone=backbone,
        baseline=baseline,
        overrides=overrides,
        conditioned=conditioned,
        k=k,
        max_dets=max_dets,
        per_class_cap=per_class_cap,
        protocol=protocol,
        backend=backend,
        num_gpus=num_gpus,
        output_dir=output_dir,
        output=output,
        max_images=max_images,
        max_bad_images=max_bad_images,
        wandb=wandb,
        data_root=data_root,
        cache_dir=cache_dir,
    )
    from decola_core.errors import ConfigError

    if settings.predictions is not None:
        if settings.annotations is None:
            raise ConfigError("--predictions needs --annotations (the ground truth)")
        _score(settings, settings.predictions, settings.annotations, settings.output)
        return
    if settings.weights is None:
        raise ConfigError(
            "give --predictions FILE to score a results file, or --weights to run a model"
        )
    _run_model(settings)


def _budgets(settings: EvalSettings, default: int) -> list[int]:
    return sorted(set(settings.k)) if settings.k else [settings.max_dets or default]


def _score(
    settings: EvalSettings,
    predictions: Path,
    annotations: Path,
    metrics_path: Path | None,
    recipe_name: str | None = None,
    default_dets: int = 300,
    image_ids: list[int] | None = None,
) -> None:
    from decola_core.evaluation import GroundTruth, Predictions, evaluate
    from decola_core.evaluation.lvis_eval import evaluate_coco

    truth = GroundTruth.load(annotations)
    if image_ids is not None and len(image_ids) < len(truth.image_ids):
        truth = truth.restrict(image_ids)
    preds = Predictions.load(predictions)
    err.print(
        f"scoring {len(preds):,} detections on {len(truth.image_ids):,} images "
        f"({settings.protocol} protocol)"
    )
    protocol = settings.protocol
    if protocol == "standard" and not all("frequency" in c for c in truth.data["categories"]):
        protocol = "coco"  # no LVIS frequency groups: a COCO-format set
        err.print("categories have no 'frequency': using the COCO protocol")
    results = {}
    for budget in _budgets(settings, default_dets):
        if protocol == "coco":
            results[budget] = evaluate_coco(truth, preds, max_dets=budget)
        else:
            results[budget] = evaluate(
                truth,
                preds,
                max_dets=budget,
                per_class_cap=settings.per_class_cap,
                protocol=protocol,
                backend=settings.backend,
            )
    settings = settings.model_copy(update={"protocol": protocol})
    _print_table(results, settings)
    metrics_path = metrics_path or predictions.with_name("metrics.json")
    _write_outputs(results, truth, metrics_path, settings)
    if settings.wandb:
        _log_wandb(results, settings, recipe_name)


def _print_table(results, settings: EvalSettings) -> None:
    from rich.table import Table

    from decola_core.evaluation import METRIC_KEYS

    label = "c-mAP budget" if settings.k else "max dets"
    table = Table(title=f"LVIS box AP ({settings.protocol} protocol, %)")
    table.add_column(label)
    keys = [k for k in METRIC_KEYS if k in next(iter(results.values())).metrics]
    for key in keys:
        table.add_column(key, justify="right")
    for budget, result in results.items():
        shown = "-" if settings.protocol == "fixed" else str(budget)
        table.add_row(shown, *(f"{result.metrics[key]:.2f}" for key in keys))
    out.print(table)


def _write_outputs(results, truth, metrics_path: Path, settings: EvalSettings) -> None:
    from decola_core.evaluation import METRIC_KEYS
    from decola_core.utils.io import atomic_open, atomic_write_text

    def flat(result):
        return {key: result.metrics[key] for key in METRIC_KEYS if key in result.metrics}

    if len(results) == 1:
        payload = {**flat(next(iter(results.values()))), "protocol": settings.protocol}
    else:
        payload = {
            "protocol": settings.protocol,
            "k": {str(b): flat(r) for b, r in results.items()},
        }
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
    err.print(f"wrote {metrics_path} and {csv_path}")


def _log_wandb(results, settings: EvalSettings, recipe_name: str | None) -> None:
    import wandb

    run = wandb.init(
        project="decola",
        name=f"eval-{recipe_name or 'predictions'}",
        job_type="eval",
        dir=str(settings.output_dir or Path.cwd()),
    )
    for budget, result in results.items():
        run.log({f"eval@{budget}/{k}": v for k, v in result.metrics.items()})
    run.finish()


def _run_model(settings: EvalSettings) -> None:
    from decola_core.engine.distributed import (
        barrier,
        in_distributed_job,
        init_distributed,
        relaunch,
    )

    if settings.num_gpus > 1 and not in_distributed_job():
        sys.exit(relaunch(settings.num_gpus, sys.argv[1:]))

    from decola_core.data.catalog import DatasetCatalog
    from decola_core.data.lvis import LvisDataset
    from decola_core.errors import ConfigError
    from decola_core.evaluation.runner import combine_shards, predict_shard, shard_range
    from decola_core.modeling.predictor import Predictor
    from decola_core.utils.progress import progress_bar

    recipe = settings.load_recipe()
    context = init_distributed()
    if settings.annotations is not None:
        if settings.images is None:
            raise ConfigError("--annotations in model mode needs --images DIR")
        annotations, image_root, name = (
            settings.annotations,
            settings.images,
            settings.annotations.stem,
        )
    else:
        name = settings.eval_dataset or (recipe.data.test[0] if recipe.data.test else None)
        if name is None:
            raise ConfigError(
                "the recipe has no test set; pass --eval-dataset NAME or --annotations"
            )
        resolved = DatasetCatalog(settings.data_root, recipe.data.datasets).get(name)
        annotations, image_root = resolved.annotations, resolved.image_root
    dataset = LvisDataset(annotations, image_root)
    if len(dataset.category_ids) != recipe.model.classifier.num_classes:
        raise ConfigError(
            f"{annotations} has {len(dataset.category_ids)} categories but the recipe's "
            f"classifier has {recipe.model.classifier.num_classes}"
        )
    conditioned = settings.conditioned if settings.conditioned is not None else recipe.test.oracle
    budget = max(_budgets(settings, recipe.test.detections_per_image))
    predictor = Predictor.from_recipe(
        recipe,
        settings.weights,
        data_root=settings.data_root,
        cache_dir=settings.cache_dir,
        offline=settings.offline,
        device=context.device,
    )
    predictor.max_detections = budget
    output_dir = settings.output_dir or Path(recipe.resolved_output_dir()) / f"eval_{name}"
    total = min(len(dataset), settings.max_images or len(dataset))
    indices = shard_range(total, context.rank, context.world_size)
    shard = output_dir / "shards" / f"rank{context.rank:03d}.jsonl"
    if context.is_main:
        err.print(
            f"evaluating [bold]{recipe.name}[/] ({settings.weights}) on {name}: {total:,} images, "
            f"{'conditioned on GT classes' if conditioned else 'all classes'}, "
            f"{context.world_size} process(es) -> {output_dir}"
        )
    with progress_bar("img", disable=not context.is_main, console=err) as bar:
        task = bar.add_task("inference", total=len(indices))
        stats = predict_shard(
            predictor,
            dataset,
            shard,
            conditioned=conditioned,
            indices=indices,
            max_bad_images=settings.max_bad_images,
            on_image=lambda: bar.advance(task),
        )
    barrier()
    if not context.is_main:
        return
    shards = sorted((output_dir / "shards").glob("rank*.jsonl"))[: context.world_size]
    count = combine_shards(shards, output_dir / "predictions.json")
    err.print(
        f"{count:,} detections from {total:,} images ({stats.bad_images} unreadable on rank 0) "
        f"-> {output_dir / 'predictions.json'}"
    )
    if not any(len(r.classes) for r in dataset.records[:total]):
        err.print("the dataset has no boxes: predictions written, nothing to score")
        return
    _score(
        settings,
        output_dir / "predictions.json",
        annotations,
        output_dir / "metrics.json",
        recipe.name,
        recipe.test.detections_per_image,
        image_ids=[r.image_id for r in dataset.records[:total]],
    )
