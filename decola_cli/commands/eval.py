"""``decola eval``: LVIS AP, fixed AP and conditioned mAP@k, of a model or of a results file."""

from __future__ import annotations

from decola_cli.command import job_values, settings_command
from decola_cli.console import err, out
from decola_cli.settings import EvalSettings
from decola_core.jobs import EvalJob, LaunchOptions

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
    table = Table(title=f"LVIS box AP ({report.protocol} protocol, %)")
    table.add_column(label)
    keys = [k for k in METRIC_KEYS if k in next(iter(report.results.values())).metrics]
    for key in keys:
        table.add_column(key, justify="right")
    for budget, result in report.results.items():
        shown = "-" if report.protocol == "fixed" else str(budget)
        table.add_row(shown, *(f"{result.metrics[key]:.2f}" for key in keys))
    console.print(table)
    err.print(f"wrote {report.metrics_path} and {report.csv_path}")
