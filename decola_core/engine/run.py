"""``run_training(job)``: everything ``decola train`` does around the trainer — datasets and
weights resolved, the run described, progress shown, W&B, and where the outputs went."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from decola_core.config.schema import DatasetDeclaration, Recipe
from decola_core.data.catalog import DatasetCatalog
from decola_core.data.toy import ensure_toy_dataset, recipe_uses_toy_data
from decola_core.engine.checkpointer import Checkpointer
from decola_core.engine.distributed import barrier, init_distributed
from decola_core.engine.trainer import Trainer
from decola_core.errors import ConfigError
from decola_core.jobs import TrainJob, TrainOptions
from decola_core.modeling import build_model
from decola_core.utils.progress import progress_bar
from decola_core.zoo import resolve_weights

log = logging.getLogger(__name__)


def prepare_recipe(job: TrainJob) -> Recipe:
    """Apply ``--pseudo-labels``: the last (image-labelled or pseudo) training set becomes the
    given pseudo-annotation file, read as boxes, with the images of the set it replaces."""
    recipe = job.recipe
    if job.pseudo_labels is None:
        return recipe
    catalog = DatasetCatalog(job.data_root, recipe.data.datasets)
    if len(recipe.data.train) < 2:
        raise ConfigError(
            "--pseudo-labels needs a phase-2 recipe (box data + a second training set)"
        )
    last = recipe.data.train[-1]
    if job.pseudo_labels in catalog:
        name = job.pseudo_labels
        datasets = recipe.data.datasets
    else:
        path = Path(job.pseudo_labels).expanduser()
        if not path.is_file():
            raise ConfigError(f"--pseudo-labels: {path} is neither a file nor a catalog dataset")
        image_root = catalog.get(last.name).image_root
        name = "pseudo_labels"
        datasets = {
            **recipe.data.datasets,
            name: DatasetDeclaration(
                image_root=str(image_root.resolve()),
                annotations=str(path.resolve()),
                ann_type="box",
            ),
        }
    train = [*recipe.data.train[:-1], last.model_copy(update={"name": name, "ann_type": "box"})]
    data = recipe.data.model_copy(update={"train": train, "datasets": datasets})
    return recipe.model_copy(update={"data": data})


def run_training(job: TrainJob, console=None) -> Path | None:
    """Train; returns ``model_final.pth`` on the main process (None elsewhere)."""
    from rich.console import Console

    console = console or Console(stderr=True)
    recipe = prepare_recipe(job)
    output_dir = job.resolved_output_dir()
    context = init_distributed()
    if recipe_uses_toy_data(recipe) and context.is_main:
        ensure_toy_dataset(job.data_root)
    _wait_for_main(context)
    weights_spec = job.weights or recipe.model.weights or None
    weights = None
    if weights_spec:
        weights = (
            resolve_weights(weights_spec, job.cache_dir, offline=job.offline)
            if context.is_main
            else None
        )
        _wait_for_main(context)
        weights = resolve_weights(weights_spec, job.cache_dir, offline=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    options = {f.name: getattr(job, f.name) for f in dataclasses.fields(TrainOptions)}
    options.update(output_dir=output_dir, init_weights=weights, teacher_weights=weights)
    trainer = Trainer(
        recipe,
        TrainOptions(**options),
        context,
        lambda r: build_model(r, data_root=job.data_root),
    )
    if context.is_main:
        console.print(
            f"training [bold]{recipe.name}[/] ({recipe.model.architecture}) -> {output_dir}"
        )
        if recipe.description:
            console.print(f"  {recipe.description}", markup=False)
        for line in trainer.data.describe():
            console.print(f"  data  {line}")
        console.print(
            f"  {trainer.max_iter:,} iterations, checkpoint every {trainer.period:,}, "
            f"{context.world_size} process(es) on {context.device}, seed {trainer.seed}"
            + (f", initial weights {weights}" if weights else "")
        )
    run = (
        _wandb(recipe, job, trainer, output_dir)
        if context.is_main and recipe.logging.wandb.enabled
        else None
    )
    with progress_bar("it", disable=not context.is_main, console=console) as bar:
        task = bar.add_task("train", total=trainer.max_iter)

        def on_log(record: dict) -> None:
            if "images" in record:  # a visualisation
                if run is not None:
                    import wandb  # already imported by _wandb when a run exists

                    images = {k: wandb.Image(v) for k, v in record["images"].items()}
                    run.log(images, step=record["iter"])
                return
            description = (
                f"train loss {record['total_loss']:.3f} lr {record['lr']:.2e} "
                f"{record['images_per_s']:.1f} img/s"
            )
            bar.update(task, completed=record["iter"], description=description)
            if run is not None:
                run.log(record, step=record["iter"])

        final = trainer.run(on_log)
        bar.update(task, completed=trainer.max_iter)
    if run is not None:
        run.finish()
    if context.is_main:
        console.print(f"metrics: {output_dir / 'metrics.jsonl'}; final weights: {final}")
        return final
    return None


def _wait_for_main(context) -> None:
    if context.world_size > 1:
        barrier()


def _wandb(recipe: Recipe, job: TrainJob, trainer: Trainer, output_dir: Path):
    import wandb  # slow to import; only when W&B is on

    cfg = recipe.logging.wandb
    latest = trainer.checkpointer.latest() if job.resume else None
    run_id = None
    if latest is not None:
        run_id = Checkpointer.load(latest).get("wandb_id")
    run = wandb.init(
        project=cfg.project or "decola",
        group=cfg.group or None,
        name=cfg.run_name,
        id=run_id,
        resume="allow",
        dir=str(output_dir),
        config=recipe.model_dump(mode="json"),
    )
    trainer.wandb_id = run.id
    return run
