"""``run_training(job)``: everything ``decola train`` does around the trainer — datasets and
weights resolved, the run described, progress shown, W&B, and where the outputs went."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from decola_core.config.schema import DatasetDeclaration, Recipe
from decola_core.data.catalog import DatasetCatalog
from decola_core.data.toy import ensure_toy_data
from decola_core.engine.distributed import barrier, init_distributed
from decola_core.engine.trainer import Trainer
from decola_core.errors import ConfigError
from decola_core.jobs import TrainJob, TrainOptions
from decola_core.modeling import build_model
from decola_core.modeling.ops.ms_deform_attn import get_backend
from decola_core.utils.logs import log_file
from decola_core.utils.progress import progress_bar
from decola_core.zoo import resolve_weights

log = logging.getLogger(__name__)


def prepare_recipe(job: TrainJob) -> Recipe:
    """Apply ``--pseudo-labels``: the last (image-labelled or pseudo) training set becomes the
    given pseudo-annotation file, with the images of the set it replaces, read as boxes.
    Where a recipe lists that set twice (the CenterNet2 "+Detic" recipes: once as boxes, once
    as image labels), both entries read the file and keep their kinds."""
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
    twice = sum(d.name == last.name for d in recipe.data.train) > 1
    train = [
        d.model_copy(update={"name": name, "ann_type": d.ann_type if twice else "box"})
        if d.name == last.name
        else d
        for d in recipe.data.train
    ]
    data = recipe.data.model_copy(update={"train": train, "datasets": datasets})
    return recipe.model_copy(update={"data": data})


def run_training(job: TrainJob) -> Path | None:
    """Train; returns ``model_final.pth`` on the main process (None elsewhere). Messages go to
    the console and to ``<output_dir>/log.txt``; progress is a bar on a terminal and periodic
    lines otherwise (and in the log)."""
    recipe = prepare_recipe(job)
    output_dir = job.resolved_output_dir()
    context = init_distributed()
    output_dir.mkdir(parents=True, exist_ok=True)
    with log_file(output_dir, enabled=context.is_main):
        return _train(job, recipe, output_dir, context)


def _train(job: TrainJob, recipe: Recipe, output_dir: Path, context) -> Path | None:
    if context.is_main:
        ensure_toy_data(recipe, job.data_root)
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
    options = {f.name: getattr(job, f.name) for f in dataclasses.fields(TrainOptions)}
    options.update(output_dir=output_dir, init_weights=weights, teacher_weights=weights)
    trainer = Trainer(
        recipe,
        TrainOptions(**options),
        context,
        lambda r: build_model(r, data_root=job.data_root),
    )
    if context.is_main:
        log.info("training %s (%s) -> %s", recipe.name, recipe.model.architecture, output_dir)
        if recipe.description:
            log.info("  %s", recipe.description)
        for line in trainer.data.describe():
            log.info("  data  %s", line)
        log.info(
            "  %s iterations, checkpoint every %s, %d process(es) on %s, seed %d%s",
            f"{trainer.max_iter:,}",
            f"{trainer.period:,}",
            context.world_size,
            context.device,
            trainer.seed,
            f", initial weights {weights}" if weights else "",
        )
        log.info(
            "  deformable attention %s, AMP %s",
            get_backend(device=context.device)[0],
            recipe.solver.amp,
        )
    run = (
        _wandb(recipe, job, trainer, output_dir)
        if context.is_main and recipe.logging.wandb.enabled
        else None
    )
    with progress_bar("it", disable=not context.is_main) as bar:
        task = bar.add_task("train", total=trainer.max_iter)

        def on_log(record: dict) -> None:
            if "images" in record:  # a visualisation
                if run is not None:
                    import wandb  # already imported by _wandb when a run exists

                    images = {k: wandb.Image(v) for k, v in record["images"].items()}
                    run.log(images, step=record["iter"])
                return
            state = (
                f"loss {record['total_loss']:.3f} lr {record['lr']:.2e} "
                f"{record['images_per_s']:.1f} img/s"
            )
            bar.update(task, completed=record["iter"], description=f"train {state}")
            if run is not None:
                run.log(record, step=record["iter"])

        final = trainer.run(on_log)
        bar.update(task, completed=trainer.max_iter)
    if run is not None:
        run.finish()
    if not context.is_main:
        return None
    steps = trainer.max_iter - trainer.start_iter
    log.info(
        "trained iterations %d-%d (%d steps); metrics: %s; final weights: %s",
        trainer.start_iter + 1,
        trainer.max_iter,
        steps,
        output_dir / "metrics.jsonl",
        final,
    )
    return final


def _wait_for_main(context) -> None:
    if context.world_size > 1:
        barrier()


def _wandb(recipe: Recipe, job: TrainJob, trainer: Trainer, output_dir: Path):
    import wandb  # slow to import; only when W&B is on

    cfg = recipe.logging.wandb
    found = trainer.checkpointer.load_latest() if job.resume else None
    run_id = found[1].get("wandb_id") if found is not None else None
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
