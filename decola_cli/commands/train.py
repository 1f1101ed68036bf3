"""``decola train``: phase 1, phase 2 (online or offline pseudo-labels) and the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from decola_cli.command import job_values, option, settings_command
from decola_cli.console import err, out
from decola_cli.settings import (
    CustomDataSettings,
    MultiNodeSettings,
    NetworkRunSettings,
    TrustSettings,
)
from decola_core.jobs import EvalJob, LaunchOptions, TrainJob


class TrainSettings(NetworkRunSettings, TrustSettings, CustomDataSettings, MultiNodeSettings):
    """``decola train``."""

    weights: str | None = option(
        "--weights", "-w", help="Initial weights (path or zoo name); phase 2: the phase-1 model."
    )
    pseudo_labels: str | None = option(
        "--pseudo-labels",
        help="Phase 2 offline: pseudo-annotation file (path) or catalog dataset name.",
    )
    output_dir: Path | None = option("--output-dir", help="Run folder (default: output/<recipe>).")
    max_iter: int | None = option("--max-iter", help="Stop after this many iterations.", min=1)
    checkpoint_period: int | None = option(
        "--checkpoint-period", help="Iterations between checkpoints (default: the recipe's).", min=1
    )
    resume: bool | None = option(
        "--resume/--no-resume", help="Continue from the newest checkpoint (default: yes)."
    )
    num_workers: int | None = option(
        "--num-workers", help="Data-loader processes per GPU (default: the recipe's).", min=0
    )
    max_bad_images: int | None = option(
        "--max-bad-images", help="Unreadable images to skip before failing.", min=0
    )
    seed: int | None = option("--seed", help="Base seed (default: the recipe's).")
    amp: Literal["off", "backbone-fp16", "fp16", "bf16"] | None = option(
        "--amp",
        help="Mixed precision (solver.amp): bf16 (CUDA and CPU), fp16 (CUDA), backbone-fp16 "
        "(the original's FP16 mode) or off (default: the recipe's).",
    )
    wandb: bool | None = option(
        "--wandb/--no-wandb", help="Log to Weights & Biases (default: the recipe's)."
    )
    eval_only: bool = option(
        "--eval-only",
        help="Evaluate --weights (default: the run's model_final.pth) on the recipe's test set "
        "instead of training.",
        default=False,
    )

    def recipe_overrides(self) -> list[str]:
        amp = [] if self.amp is None else [f"solver.amp='{self.amp}'"]  # YAML reads off as false
        return [*super().recipe_overrides(), *amp]


EPILOG = """[bold]Examples[/]

  decola train --phase 1 --dataset toy
  decola train --phase 1 --dataset toy --output-dir runs/toy --max-iter 200 --checkpoint-period 50
  decola train --phase 1 --dataset lvis-base --num-gpus 8
  decola train --phase 1 --dataset lvis-base --num-gpus 8 --amp bf16 --compile
  decola train --phase 2 --dataset lvis-base --weights decola-phase1-lbase-r50 --num-gpus 8
  decola train --phase 2 --labels offline --pseudo-labels datasets/imagenet/pseudo.json --weights W
  decola train --phase 1 --train-json my/train.json --train-images my/images \\
      --val-json my/val.json --val-images my/images --clip-weights clip-vit-b-32 \\
      --weights decola-phase1-lbase-r50 --epochs 12
  torchrun --nnodes 2 --nproc-per-node 8 -m decola_cli.main train --phase 1 --dataset lvis
"""


@settings_command(TrainSettings, defaults=(TrainJob, LaunchOptions))
def train_command(settings: TrainSettings) -> None:
    """Train a DECOLA model or a baseline; resumes automatically after an interruption."""
    from decola_core.engine.launch import launch
    from decola_core.engine.run import run_training

    overrides = []
    if settings.seed is not None:
        overrides.append(f"seed={settings.seed}")
    if settings.wandb is not None:
        overrides.append(f"logging.wandb.enabled={str(settings.wandb).lower()}")
    job = TrainJob(recipe=settings.load_recipe(overrides), **job_values(settings, TrainJob))
    if settings.uses_custom_data():
        from decola_core.engine.custom_data import CustomData, with_custom_data

        job = with_custom_data(job, CustomData(**job_values(settings, CustomData)))
    processes = LaunchOptions(**job_values(settings, LaunchOptions))
    if settings.eval_only:
        _evaluate(settings, job, processes)
        return
    final = launch(run_training, job, processes)
    if final is not None:
        err.print(f"[bold green]done[/]: {final}")


def _evaluate(settings: TrainSettings, job, processes) -> None:
    """``--eval-only``: ``decola eval`` of the run's weights on its recipe's test set."""
    from decola_cli.commands.eval import print_report
    from decola_core.engine.launch import launch
    from decola_core.errors import ConfigError
    from decola_core.evaluation.job import run_evaluation

    output_dir = job.resolved_output_dir()
    weights = settings.weights or str(output_dir / "model_final.pth")
    if settings.weights is None and not Path(weights).is_file():
        raise ConfigError(f"--eval-only: no --weights and no {weights} yet")
    eval_job = EvalJob(
        recipe=job.recipe,
        weights=weights,
        output_dir=output_dir / "eval",
        data_root=settings.data_root,
        cache_dir=settings.cache_dir,
        offline=settings.offline,
        trust_weights=bool(settings.trust_weights),
        allow_embedding_mismatch=bool(settings.allow_embedding_mismatch),
    )
    report = launch(run_evaluation, eval_job, processes)
    print_report(report, out)
