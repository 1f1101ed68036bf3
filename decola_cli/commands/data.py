"""``decola data``: prepare LVIS-base and ImageNet-LVIS, check that images open."""

from __future__ import annotations

from pathlib import Path

import typer

from decola_cli.command import option, settings_command
from decola_cli.console import err
from decola_cli.settings import (
    OfflineSettings,
    Settings,
)


class PrepareLvisBaseSettings(Settings):
    source: Path = option(help="LVIS train annotations (read only).", argument=True, default=...)
    output: Path | None = option(
        "--output", "-o", help="File to write (default: <source>_norare.json beside the source)."
    )


class PrepareImagenetSettings(Settings):
    images: Path = option("--images", help="Folder of <wnid>/<file> images.", default=...)
    categories: Path = option(
        "--categories", help="LVIS file whose categories (synsets) to use.", default=...
    )
    output: Path = option("--output", "-o", help="Image-info JSON to write.", default=...)
    synset_map: Path | None = option(
        "--synset-map",
        help="wnid -> WordNet synset, one 'wnid synset' per line (default: nltk).",
    )
    workers: int = option("--workers", help="Threads reading image sizes.", min=1, default=8)


class DataCheckSettings(Settings):
    annotations: Path = option(help="LVIS/COCO-format annotation file.", argument=True, default=...)
    images: Path = option(
        "--images", help="Image root the file names are relative to.", default=...
    )
    workers: int | None = option("--workers", help="Threads (default: cores).", min=1)


class EmbedSettings(OfflineSettings):
    output: Path = option("--output", "-o", help=".npy file to write.", default=...)
    clip_weights: str = option(
        "--clip-weights", help="Local CLIP weights (.pt/.safetensors) or a zoo name.", default=...
    )
    names: Path | None = option("--names", help="Text file, one class name per line.")
    annotations: Path | None = option(
        "--annotations", help="LVIS/COCO file or category list (names by id)."
    )
    template: str = option("--template", help="Prompt; {} is the class name.", default="a {}")
    model: str = option("--model", help="open_clip model name.", default="ViT-B-32-quickgelu")
    object_output: Path | None = option(
        "--object-output", help='Also write the "a object" row (the template with "object").'
    )
    device: str = option("--device", help="cpu, cuda or cuda:N.", default="cpu")


app = typer.Typer(
    help="Prepare data sets (LVIS-base, ImageNet-LVIS), check their images, embed class names.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    epilog="""[bold]Examples[/]

  decola data prepare-lvis-base datasets/lvis/lvis_v1_train.json
  decola data prepare-imagenet-lvis --images datasets/imagenet/ImageNet-LVIS \\
      --categories datasets/lvis/lvis_v1_val.json --synset-map wnid_synsets.txt \\
      --output datasets/imagenet/annotations/imagenet_lvis_image_info.json
  decola data check datasets/lvis/lvis_v1_train.json --images datasets/coco
""",
)


@app.command("prepare-lvis-base")
@settings_command(PrepareLvisBaseSettings)
def prepare_lvis_base_command(settings: PrepareLvisBaseSettings) -> None:
    """LVIS train -> LVIS-base: rare-category boxes removed, images and categories kept."""
    from decola_core.data.prepare import prepare_lvis_base

    source = settings.source
    target = settings.output or source.with_name(source.stem + "_norare.json")
    report = prepare_lvis_base(source, target)
    err.print(
        f"removed {report.removed:,} boxes of {report.rare_categories} rare categories, kept "
        f"{report.kept:,} boxes on {report.images:,} images -> {target}"
    )


@app.command("prepare-imagenet-lvis")
@settings_command(PrepareImagenetSettings)
def prepare_imagenet_lvis_command(settings: PrepareImagenetSettings) -> None:
    """ImageNet folders -> image-info JSON with one image-level LVIS label per image."""
    from decola_core.data.prepare import prepare_imagenet_lvis
    from decola_core.utils.progress import progress_bar

    with progress_bar("img", console=err) as bar:
        task = bar.add_task("image sizes", total=None)
        counts = prepare_imagenet_lvis(
            settings.images,
            settings.categories,
            settings.output,
            synset_map=settings.synset_map,
            workers=settings.workers,
            on_images=lambda n: bar.advance(task, n),
            on_start=lambda n: bar.update(task, total=n),
        )
    err.print(
        f"{counts['images']:,} images of {counts['classes']} LVIS classes "
        f"({counts['skipped_folders']} folders without an LVIS synset skipped) -> "
        f"{settings.output}"
    )


@app.command("check")
@settings_command(DataCheckSettings)
def check_command(settings: DataCheckSettings) -> None:
    """Open every image; unreadable ones go to <annotations>.skip.txt, which loaders honour."""
    from decola_core.data.images import skip_list_path
    from decola_core.data.prepare import check_images
    from decola_core.utils.progress import progress_bar

    with progress_bar("img", console=err) as bar:
        task = bar.add_task("check", total=None)
        bad = check_images(
            settings.annotations,
            settings.images,
            workers=settings.workers,
            on_images=lambda n: bar.advance(task, n),
        )
    annotations = settings.annotations
    if not bad:
        err.print(f"every image of {annotations} opens")
        return
    for image_id, path, reason in bad[:10]:
        err.print(f"  image {image_id}: {path}: {reason}")
    if len(bad) > 10:
        err.print(f"  ... and {len(bad) - 10:,} more")
    err.print(
        f"{len(bad):,} unreadable image(s) listed in {skip_list_path(annotations)}; "
        "the data loaders (training, self-labelling, eval model runs) leave them out"
    )


@app.command("embed")
@settings_command(EmbedSettings)
def embed_command(settings: EmbedSettings) -> None:
    """Class-name CLIP embeddings (rows in category-id order, not normalised) as .npy."""
    from decola_core.errors import ConfigError
    from decola_core.text.embeddings import embed_class_file

    s = settings
    if (s.names is None) == (s.annotations is None):
        raise ConfigError("give exactly one of --names FILE or --annotations FILE")
    rows, dim = embed_class_file(
        s.names or s.annotations,
        s.output,
        s.clip_weights,
        model=s.model,
        template=s.template,
        object_output=s.object_output,
        device=s.device,
        cache_dir=s.cache_dir,
        offline=s.offline,
        say=err.print,
    )
    err.print(f"wrote {s.output} ({rows}, {dim})")
    if s.object_output is not None:
        err.print(f"wrote {s.object_output} (1, {dim})")
