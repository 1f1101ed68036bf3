"""``decola self-label``, ``convert``, ``merge`` and ``dedup``: the pseudo-labelling chain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from decola_cli import options
from decola_cli.console import err

SELF_LABEL_EPILOG = """[bold]Examples[/]

  decola self-label --weights decola-phase1-lbase-r50 --dataset imagenet_lvis_v1 \\
      --min-sizes 240 280 320 360 400 --output output/pseudo --num-gpus 8 --postprocess
  decola self-label --config toy/DECOLA_PHASE1_Toy --weights runs/toy/model_final.pth \\
      --dataset toy_image_labels --min-sizes 96 128 --output runs/toy_pseudo --postprocess
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


def convert_command(
    predictions: Annotated[
        Path, typer.Option(help="Results JSON, a .jsonl shard or a shard folder.")
    ],
    image_info: Annotated[Path, typer.Option(help="Image-info JSON of the labelled set.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Pseudo-annotation file to write.")
    ],
    min_score: Annotated[float, typer.Option(help="Drop boxes scoring below this.")] = 0.0,
    cache_dir: options.CacheDirOption = None,
) -> None:
    """Predictions + image info -> an LVIS-format pseudo-annotation file.

    The image info is parsed once and cached (in columns) for the conversions of other sizes.
    """
    from decola_cli.settings import DecolaSettings, build_settings
    from decola_core.pseudo.postprocess import convert

    settings = build_settings(DecolaSettings, cache_dir=cache_dir)
    count = convert(
        predictions, image_info, output, min_score=min_score, cache_dir=settings.cache_dir
    )
    err.print(f"wrote {count:,} boxes to {output}")


def merge_command(
    inputs: Annotated[list[Path], typer.Argument(help="Pseudo-annotation files (one per size).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Merged file to write.")],
    allow_mismatch: Annotated[
        bool, typer.Option(help="Merge files with different images/categories.")
    ] = False,
) -> None:
    """Merge pseudo-annotation files; ids renumbered, inputs recorded in 'info'."""
    from decola_core.pseudo.postprocess import merge

    count = merge(inputs, output, allow_mismatch=allow_mismatch)
    err.print(f"merged {len(inputs)} files, {count:,} boxes -> {output}")


def dedup_command(
    input_path: Annotated[Path, typer.Argument(help="Merged pseudo-annotation file (read only).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New file to write.")],
    iou_threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="NMS IoU threshold.")
    ] = 0.9,
    class_aware: Annotated[
        bool, typer.Option("--class-aware/--class-agnostic", help="Suppress only within a class.")
    ] = True,
) -> None:
    """Per-image NMS on corner boxes; prints counts before and after."""
    from decola_core.pseudo.postprocess import dedup

    report = dedup(input_path, output, iou_threshold=iou_threshold, class_aware=class_aware)
    _print_dedup(report, output)


def _print_dedup(report, output: Path) -> None:
    from rich.table import Table

    table = Table(title="dedup")
    for column in ("boxes", "before", "after"):
        table.add_column(column, justify="right" if column != "boxes" else "left")
    for name, (before, after) in report.per_source.items():
        table.add_row(name, f"{before:,}", f"{after:,}")
    table.add_row("[bold]total", f"[bold]{report.before:,}", f"[bold]{report.after:,}")
    err.print(table)
    err.print(f"wrote {output}")


def self_label_command(
    weights: Annotated[
        str, typer.Option("--weights", "-w", help="Phase-1 model: path or zoo name.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    min_sizes: Annotated[
        list[int],
        typer.Option("--min-sizes", help="Test short sides, e.g. --min-sizes 240 280 320."),
    ],
    config: options.ConfigOption = None,
    phase: options.PhaseOption = None,
    backbone: options.BackboneOption = None,
    overrides: options.SetOption = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="Image-labelled catalog set (default: the recipe's test set)."),
    ] = None,
    image_info: Annotated[
        Path | None, typer.Option(help="Image-info JSON (instead of --dataset).")
    ] = None,
    images: Annotated[Path | None, typer.Option(help="Image folder for --image-info.")] = None,
    max_size: Annotated[int, typer.Option(help="Longest side after resizing.")] = 667,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 1,
    shard_images: Annotated[int, typer.Option(min=1, help="Images per output shard.")] = 2000,
    num_gpus: Annotated[int, typer.Option(min=1)] = 1,
    max_bad_images: Annotated[int, typer.Option(min=0)] = 100,
    postprocess: Annotated[
        bool, typer.Option("--postprocess", help="Then convert, merge and dedup.")
    ] = False,
    data_root: options.DataRootOption = None,
    cache_dir: options.CacheDirOption = None,
) -> None:
    """Box every image-level label with a phase-1 model, at several sizes, resumably."""
    from decola_cli.settings import SelfLabelSettings, build_settings

    settings = build_settings(
        SelfLabelSettings,
        weights=weights,
        output=output,
        min_sizes=min_sizes,
        config=config,
        phase=phase,
        backbone=backbone,
        overrides=overrides,
        label_dataset=dataset,
        image_info=image_info,
        images=images,
        max_size=max_size,
        batch_size=batch_size,
        shard_images=shard_images,
        num_gpus=num_gpus,
        max_bad_images=max_bad_images,
        postprocess=postprocess,
        data_root=data_root,
        cache_dir=cache_dir,
    )
    from decola_core.engine.distributed import in_distributed_job, relaunch

    if settings.num_gpus > 1 and not in_distributed_job():
        sys.exit(relaunch(settings.num_gpus, sys.argv[1:]))
    from decola_core.engine.distributed import init_distributed
    from decola_core.pseudo.self_label import run_self_label
    from decola_core.utils.progress import progress_bar

    context = init_distributed()
    job = settings.job()
    if context.is_main:
        err.print(
            f"self-labelling {job.image_info} with {job.recipe.name} ({settings.weights}) at "
            f"min sizes {job.min_sizes} (max {job.max_size}) -> {job.output_dir}"
        )
    with progress_bar("img", disable=not context.is_main, console=err) as bar:
        task = bar.add_task("self-label", total=None)
        manifest = run_self_label(
            job,
            context,
            on_images=lambda n: bar.advance(task, n),
            on_start=lambda n: bar.update(task, total=n),
        )
    if not context.is_main:
        return
    err.print("boxes per size: " + ", ".join(f"{s}: {n:,}" for s, n in manifest["boxes"].items()))
    if settings.postprocess:
        final = _postprocess(job, settings.cache_dir)
        err.print(
            "train phase 2 on them with:\n  decola train --phase 2 --labels offline "
            f"--pseudo-labels {final} --weights {settings.weights}"
        )


def _postprocess(job, cache_dir: Path) -> Path:
    from decola_core.pseudo.postprocess import convert, dedup, merge

    converted = []
    for size in job.min_sizes:
        path = job.output_dir / f"pseudo_minsize_{size}.json"
        convert(job.output_dir / f"minsize_{size}", job.image_info, path, cache_dir=cache_dir)
        converted.append(path)
    merged = job.output_dir / "pseudo_merged.json"
    merge(converted, merged)
    final = job.output_dir / "pseudo_labels.json"
    report = dedup(merged, final)
    _print_dedup(report, final)
    return final
