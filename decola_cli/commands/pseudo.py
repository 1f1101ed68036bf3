"""``decola self-label``, ``convert``, ``merge`` and ``dedup``: the pseudo-labelling chain."""

from __future__ import annotations

from decola_cli.command import job_values, settings_command
from decola_cli.console import err, print_command
from decola_cli.settings import ConvertSettings, DedupSettings, MergeSettings, SelfLabelSettings
from decola_core.jobs import LaunchOptions, PseudoChainJob, SelfLabelJob

SELF_LABEL_EPILOG = """[bold]Examples[/]

  decola self-label --weights decola-phase1-lbase-r50 --label-dataset imagenet_lvis_v1 \\
      --min-sizes 240 280 320 360 400 --output-dir output/pseudo --num-gpus 8 --postprocess
  decola self-label --config toy/DECOLA_PHASE1_Toy --weights runs/toy/model_final.pth \\
      --label-dataset toy_image_labels --min-sizes 96 128 --output-dir runs/toy_pseudo \\
      --postprocess
"""
CONVERT_EPILOG = """[bold]Examples[/]

  decola convert --predictions output/pseudo/minsize_240 \\
      --image-info datasets/imagenet/annotations/imagenet_lvis_image_info.json --output p240.json
"""
MERGE_EPILOG = """[bold]Examples[/]

  decola merge p240.json p280.json p320.json p360.json p400.json --output merged.json
"""
DEDUP_EPILOG = """[bold]Examples[/]

  decola dedup merged.json --output pseudo.json
  decola dedup merged.json --output pseudo.json --iou-threshold 0.8 --class-agnostic
"""


@settings_command(ConvertSettings, defaults=(PseudoChainJob,))
def convert_command(settings: ConvertSettings) -> None:
    """Predictions + image info -> an LVIS-format pseudo-annotation file.

    The image info is parsed once and cached (in columns) for the conversions of other sizes.
    """
    from decola_core.pseudo.postprocess import convert

    count = convert(
        settings.predictions,
        settings.image_info,
        settings.output,
        **job_values(settings, convert),
    )
    err.print(f"wrote {count:,} boxes to {settings.output}")


@settings_command(MergeSettings)
def merge_command(settings: MergeSettings) -> None:
    """Merge pseudo-annotation files; ids renumbered, inputs recorded in 'info'."""
    from decola_core.pseudo.postprocess import merge

    count = merge(settings.inputs, settings.output, **job_values(settings, merge))
    err.print(f"merged {len(settings.inputs)} files, {count:,} boxes -> {settings.output}")


@settings_command(DedupSettings, defaults=(PseudoChainJob,))
def dedup_command(settings: DedupSettings) -> None:
    """Per-image NMS on corner boxes; prints counts before and after."""
    from decola_core.pseudo.postprocess import dedup

    report = dedup(settings.input_path, settings.output, **job_values(settings, dedup))
    print_dedup(report, settings.output)


def print_dedup(report, output) -> None:
    from rich.table import Table

    table = Table(title="dedup")
    for column in ("boxes", "before", "after"):
        table.add_column(column, justify="right" if column != "boxes" else "left")
    for name, (before, after) in report.per_source.items():
        table.add_row(name, f"{before:,}", f"{after:,}")
    table.add_row("[bold]total", f"[bold]{report.before:,}", f"[bold]{report.after:,}")
    err.print(table)
    err.print(f"wrote {output}")


@settings_command(SelfLabelSettings, defaults=(SelfLabelJob, LaunchOptions))
def self_label_command(settings: SelfLabelSettings) -> None:
    """Box every image-level label with a phase-1 model, at several sizes, resumably."""
    from decola_core.engine.launch import launch
    from decola_core.pseudo.self_label import run_self_label

    job = SelfLabelJob(
        recipe=settings.load_recipe(),
        image_root=settings.images,
        **job_values(settings, SelfLabelJob),
    )
    processes = LaunchOptions(**job_values(settings, LaunchOptions))
    result = launch(run_self_label, job, processes)
    if result is None:
        return
    boxes = result.manifest["boxes"]
    err.print("boxes per size: " + ", ".join(f"{s}: {n:,}" for s, n in boxes.items()))
    if result.pseudo_labels is not None:
        print_dedup(result.dedup, result.pseudo_labels)
        err.print("train phase 2 on them with:")
        print_command(
            f"decola train --phase 2 --labels offline --pseudo-labels {result.pseudo_labels} "
            f"--weights {settings.weights}"
        )
