"""``decola train``: phase 1, phase 2 (online or offline pseudo-labels) and the baselines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from decola_cli import options
from decola_cli.console import err
from decola_cli.settings import TrainSettings, build_settings

EPILOG = """[bold]Examples[/]

  decola train --phase 1 --dataset toy
  decola train --phase 1 --dataset toy --output-dir runs/toy --max-iter 200 --checkpoint-period 50
  decola train --phase 1 --dataset lvis-base --num-gpus 8
  decola train --phase 2 --dataset lvis-base --weights decola-phase1-lbase-r50 --num-gpus 8
  decola train --phase 2 --labels offline --pseudo-labels datasets/imagenet/pseudo.json --weights W
  torchrun --nnodes 2 --nproc-per-node 8 -m decola_cli.main train --phase 1 --dataset lvis
"""


def train_command(
    config: options.ConfigOption = None,
    phase: options.PhaseOption = None,
    dataset: options.DatasetOption = None,
    backbone: options.BackboneOption = None,
    baseline: options.BaselineOption = None,
    labels: options.LabelsOption = None,
    overrides: options.SetOption = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            "-w",
            help="Initial weights (path or zoo name); phase 2: the phase-1 model.",
        ),
    ] = None,
    pseudo_labels: Annotated[
        str | None,
        typer.Option(
            help="Phase 2 offline: pseudo-annotation file (path) or catalog dataset name."
        ),
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="(default: output/<recipe>)")] = None,
    max_iter: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many iterations.")
    ] = None,
    checkpoint_period: Annotated[
        int | None, typer.Option(min=1, help="Iterations between checkpoints.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from the newest checkpoint.")
    ] = True,
    num_gpus: Annotated[int, typer.Option(min=1, help="Local worker processes (one per GPU).")] = 1,
    num_machines: Annotated[
        int, typer.Option(min=1, help="Machines of a manual multi-node run.")
    ] = 1,
    machine_rank: Annotated[int, typer.Option(min=0, help="This machine's rank (multi-node).")] = 0,
    dist_url: Annotated[
        str | None, typer.Option(help="host:port of machine 0 (multi-node).")
    ] = None,
    num_workers: Annotated[
        int | None, typer.Option(min=0, help="Data-loader processes per GPU.")
    ] = None,
    max_bad_images: Annotated[
        int, typer.Option(min=0, help="Unreadable images to skip before failing.")
    ] = 100,
    seed: Annotated[int | None, typer.Option(help="Base seed (each rank adds its rank).")] = None,
    wandb: Annotated[
        bool | None, typer.Option("--wandb/--no-wandb", help="Log to Weights & Biases.")
    ] = None,
    eval_only: Annotated[
        bool,
        typer.Option(
            "--eval-only",
            help="Evaluate --weights (default: the run's model_final.pth) "
            "on the recipe's test set instead of training.",
        ),
    ] = False,
    data_root: options.DataRootOption = None,
    cache_dir: options.CacheDirOption = None,
) -> None:
    """Train a DECOLA model or a baseline; resumes automatically after an interruption."""
    settings = build_settings(
        TrainSettings,
        config=config,
        phase=phase,
        dataset=dataset,
        backbone=backbone,
        baseline=baseline,
        labels=labels,
        overrides=overrides,
        weights=weights,
        pseudo_labels=pseudo_labels,
        output_dir=output_dir,
        max_iter=max_iter,
        checkpoint_period=checkpoint_period,
        resume=resume,
        num_gpus=num_gpus,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        num_workers=num_workers,
        max_bad_images=max_bad_images,
        seed=seed,
        wandb=wandb,
        data_root=data_root,
        cache_dir=cache_dir,
    )
    if eval_only:
        _evaluate(settings)
        return
    from decola_core.engine.distributed import in_distributed_job, relaunch

    if (settings.num_gpus > 1 or settings.num_machines > 1) and not in_distributed_job():
        sys.exit(
            relaunch(
                settings.num_gpus,
                sys.argv[1:],
                num_machines=settings.num_machines,
                machine_rank=settings.machine_rank,
                dist_url=settings.dist_url,
            )
        )
    from decola_core.engine.run import run_training

    final = run_training(settings.resolve(), console=err)
    if final is not None:
        err.print(f"[bold green]done[/]: {final}")


def _evaluate(settings: TrainSettings) -> None:
    """``--eval-only``: ``decola eval`` with the same recipe, on its test set."""
    from decola_cli.commands.eval import _run_model
    from decola_cli.settings import EvalSettings
    from decola_core.errors import ConfigError

    job = settings.resolve()
    weights = settings.weights or str(job.output_dir / "model_final.pth")
    if settings.weights is None and not Path(weights).is_file():
        raise ConfigError(f"--eval-only: no --weights and no {weights} yet")
    eval_settings = EvalSettings(
        config=job.recipe.name if settings.config is None else settings.config,
        overrides=settings.overrides,
        weights=weights,
        data_root=settings.data_root,
        cache_dir=settings.cache_dir,
        offline=settings.offline,
        num_gpus=settings.num_gpus,
        output_dir=job.output_dir / "eval",
    )
    if settings.config is None:
        eval_settings = eval_settings.model_copy(
            update={
                "config": None,
                "phase": settings.phase,
                "dataset": settings.dataset,
                "backbone": settings.backbone,
                "baseline": settings.baseline,
                "labels": settings.labels,
            }
        )
    _run_model(eval_settings)
