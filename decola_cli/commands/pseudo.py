"""``decola convert``, ``merge`` and ``dedup``: the pseudo-label chain after ``self-label``."""

from __future__ import annotations

from pathlib import Path

from decola_cli.command import job_values, option, settings_command
from decola_cli.console import err
from decola_cli.settings import (
    CacheSettings,
    Settings,
)
from decola_core.jobs import PseudoChainJob


class ConvertSettings(CacheSettings):
    """``decola convert``."""

    predictions: Path = option(
        "--predictions", help="Results JSON, a .jsonl shard or a shard folder.", default=...
    )
    image_info: Path = option(
        "--image-info", help="Image-info JSON of the labelled set.", default=...
    )
    output: Path = option("--output", "-o", help="Pseudo-annotation file to write.", default=...)
    min_score: float | None = option("--min-score", help="Drop boxes scoring below this.", min=0.0)
    skip_invalid: bool | None = option(
        "--skip-invalid",
        help="Drop (and count) boxes with NaN or negative size instead of refusing the file.",
    )


class MergeSettings(Settings):
    """``decola merge``."""

    inputs: list[Path] = option(
        help="Pseudo-annotation files (one per size).", argument=True, default=...
    )
    output: Path = option("--output", "-o", help="Merged file to write.", default=...)
    allow_mismatch: bool | None = option(
        "--allow-mismatch/--no-allow-mismatch",
        help="Merge files with different images/categories.",
    )


class DedupSettings(Settings):
    """``decola dedup``."""

    input_path: Path = option(
        help="Merged pseudo-annotation file (read only).", argument=True, default=...
    )
    output: Path = option("--output", "-o", help="New file to write.", default=...)
    iou_threshold: float | None = option(
        "--iou-threshold", help="NMS IoU threshold.", min=0.0, max=1.0
    )
    class_aware: bool | None = option(
        "--class-aware/--class-agnostic", help="Suppress only within a class (default: yes)."
    )


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
