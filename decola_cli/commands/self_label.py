"""``decola self-label``: a phase-1 model boxes every image-level label, at several sizes."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from decola_cli.command import job_values, option, settings_command
from decola_cli.commands.pseudo import print_dedup
from decola_cli.console import err, print_command
from decola_cli.settings import (
    LaunchSettings,
    NetworkRunSettings,
    TrustSettings,
)
from decola_core.jobs import LaunchOptions, SelfLabelJob


class SelfLabelSettings(NetworkRunSettings, TrustSettings, LaunchSettings):
    """``decola self-label``."""

    default_recipe: ClassVar[str | None] = "DECOLA_SELF_LABELING_Lbase_CLIP_R5021k_4x"

    weights: str = option("--weights", "-w", help="Phase-1 model: path or zoo name.", default=...)
    output_dir: Path | None = option(
        "--output-dir",
        help="Output folder (default: <recipe output_dir>/<self_label.prediction_name>).",
    )
    min_sizes: list[int] = option(
        "--min-sizes",
        help="Test short sides, e.g. --min-sizes 240 280 320 (default: the recipe's "
        "self_label.min_sizes).",
        min=1,
        default_factory=list,
    )
    label_dataset: str | None = option(
        "--label-dataset",
        help="Image-labelled catalog set to label (default: the recipe's test set).",
    )
    image_info: Path | None = option(
        "--image-info", help="Image-info JSON (instead of --label-dataset)."
    )
    images: Path | None = option("--images", help="Image folder for --image-info or --tags.")
    tags: Path | None = option(
        "--tags",
        help="Your images' tags: CSV 'file,tags' (tags split by ';') or JSON {file: [names]}; "
        "names of the model's vocabulary.",
    )
    export: Literal["coco", "yolo"] | None = option(
        "--export",
        help="Also write the deduplicated boxes as a COCO JSON or a YOLO label folder "
        "(implies --postprocess).",
    )
    max_size: int | None = option(
        "--max-size",
        help="Longest side after resizing (default: the recipe's test.max_size).",
        min=1,
    )
    batch_size: int | None = option(
        "--batch-size",
        help="Images per forward pass (default: 8 on CUDA, else the recipe's test.batch_size); "
        "only images of one input shape and label count share a pass, so batching never "
        "changes a prediction.",
        min=1,
    )
    shard_images: int | None = option("--shard-images", help="Images per output shard.", min=1)
    max_bad_images: int | None = option(
        "--max-bad-images", help="Unreadable images to skip before failing.", min=0
    )
    postprocess: bool = option(
        "--postprocess", help="Then convert, merge and dedup.", default=False
    )


SELF_LABEL_EPILOG = """[bold]Examples[/]

  decola self-label --weights decola-phase1-lbase-r50 --label-dataset imagenet_lvis_v1 \\
      --min-sizes 240 280 320 360 400 --output-dir output/pseudo --num-gpus 8 --postprocess
  decola self-label --config toy/DECOLA_PHASE1_Toy --weights runs/toy/model_final.pth \\
      --label-dataset toy_image_labels --min-sizes 96 128 --output-dir runs/toy_pseudo \\
      --postprocess
  decola self-label --config toy/DECOLA_PHASE1_Toy --weights runs/toy/model_final.pth \\
      --images my_photos --tags my_tags.csv --min-sizes 96 128 --output-dir runs/mine \\
      --export coco
"""


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
        if result.exported is not None:
            err.print(f"exported as {settings.export}: {result.exported}")
        if settings.export == "coco" and settings.images is not None:
            err.print("fine-tune on them (they replace the recipe's training data) with:")
            print_command(
                f"decola train --config {settings.recipe_name()} --train-json {result.exported} "
                f"--train-images {settings.images} --weights {settings.weights} "
                "--embeddings FILE.npy|--clip-weights FILE --epochs N"
            )
        err.print("train phase 2 on them with:")
        print_command(
            f"decola train --phase 2 --labels offline --pseudo-labels {result.pseudo_labels} "
            f"--weights {settings.weights}"
        )
