"""``decola eval``: LVIS AP, fixed AP and conditioned mAP@k, of a model or of a results file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from decola_cli.command import job_values, option, settings_command
from decola_cli.console import err, out
from decola_cli.settings import (
    LaunchSettings,
    NetworkRunSettings,
    TrustSettings,
)
from decola_core.jobs import EvalJob, LaunchOptions


class EvalSettings(NetworkRunSettings, TrustSettings, LaunchSettings):
    """``decola eval``: score a predictions file, or run a model over a dataset and score it."""

    predictions: Path | None = option(
        "--predictions", help="Score this results file (JSON array, .jsonl or shard folder)."
    )
    annotations: Path | None = option("--annotations", help="LVIS/COCO-format ground truth.")
    images: Path | None = option("--images", help="Image folder for --annotations (model mode).")
    eval_dataset: str | None = option(
        "--eval-dataset",
        help="Catalog set to evaluate on, e.g. lvis_v1_val (default: the recipe's test set).",
    )
    weights: str | None = option(
        "--weights", "-w", help="Checkpoint path or zoo name (model mode)."
    )
    conditioned: bool | None = option(
        "--conditioned/--no-conditioned",
        help="Prompt each image with its GT classes (c-mAP) (default: the recipe's).",
    )
    k: list[int] = option(
        "--k",
        help="c-mAP budgets: detections per image, e.g. --k 10 20 50 100 300.",
        min=1,
        default_factory=list,
    )
    max_dets: int | None = option(
        "--max-dets", help="Detections per image (default: the recipe's).", min=1
    )
    per_class_cap: int | None = option(
        "--per-class-cap", help="Detections per (image, class); -1 = none."
    )
    protocol: Literal["standard", "fixed", "coco"] | None = option(
        "--protocol",
        help="standard | fixed (top 10 000 per class, no per-image cap) | coco.",
    )
    backend: Literal["decola", "faster-coco-eval", "lvis-api"] | None = option(
        "--backend", help="decola | faster-coco-eval | lvis-api (the slow reference)."
    )
    output_dir: Path | None = option(
        "--output-dir",
        help="Where predictions and metrics go (default: <recipe output>/eval_<dataset>).",
    )
    output: Path | None = option(
        "--output", "-o", help="metrics.json path (scoring mode; default: beside the file)."
    )
    max_images: int | None = option("--max-images", help="Only the first N images.", min=1)
    max_bad_images: int | None = option(
        "--max-bad-images", help="Unreadable images to skip before failing.", min=0
    )
    wandb: bool | None = option("--wandb/--no-wandb", help="Log the metrics to W&B.")


EPILOG = """[bold]Examples[/]

  decola eval --predictions results.json --annotations datasets/lvis/lvis_v1_val.json
  decola eval --predictions results.json --annotations val.json --protocol fixed
  decola eval --phase 1 --weights decola-phase1-lbase-r50 --eval-dataset lvis_v1_val \\
      --conditioned --k 10 20 50 100 300
  decola eval --config toy/DECOLA_PHASE1_Toy --weights output/toy/model_final.pth \\
      --eval-dataset toy_val
"""


@settings_command(EvalSettings, defaults=(EvalJob, LaunchOptions))
def eval_command(settings: EvalSettings) -> None:
    """Evaluate LVIS box AP (AP, AP50, AP75, APs/m/l, APr/c/f) or conditioned mAP@k."""
    from decola_core.engine.launch import launch
    from decola_core.evaluation.job import run_evaluation

    recipe = None
    if settings.predictions is None and settings.weights is not None:
        recipe = settings.load_recipe()
    job = EvalJob(recipe=recipe, **job_values(settings, EvalJob))
    report = launch(run_evaluation, job, LaunchOptions(**job_values(settings, LaunchOptions)))
    print_report(report, out)


def print_report(report, console) -> None:
    """The metrics table of an evaluation and where its files went (main process only)."""
    if report is None:
        return
    from rich.table import Table

    from decola_core.evaluation import METRIC_KEYS

    label = "c-mAP budget" if report.conditioned_budgets else "max dets"
    tables = [("box", report.results, report.protocol)]
    if report.segm_results:
        segm_protocol = next(iter(report.segm_results.values())).protocol
        tables.append(("mask", report.segm_results, segm_protocol))
    for kind, results, protocol in tables:
        table = Table(title=f"{kind} AP ({protocol} protocol, %)")
        table.add_column(label)
        keys = [k for k in METRIC_KEYS if k in next(iter(results.values())).metrics]
        for key in keys:
            table.add_column(key, justify="right")
        for budget, result in results.items():
            shown = "-" if protocol == "fixed" else str(budget)
            table.add_row(shown, *(f"{result.metrics[key]:.2f}" for key in keys))
        console.print(table)
    segm = report.metrics_path.with_name(report.metrics_path.stem + "_segm.json")
    also = f" and {segm}" if report.segm_results else ""
    err.print(f"wrote {report.metrics_path} and {report.csv_path}{also}")
