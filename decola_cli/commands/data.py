"""``decola data``: prepare LVIS-base and ImageNet-LVIS, check that images open."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from decola_cli import options
from decola_cli.console import err

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
def prepare_lvis_base_command(
    source: Annotated[Path, typer.Argument(help="LVIS train annotations (read only).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="(default: <source>_norare.json beside the source)"),
    ] = None,
) -> None:
    """LVIS train -> LVIS-base: rare-category boxes removed, images and categories kept."""
    from decola_core.data.prepare import prepare_lvis_base

    target = output or source.with_name(source.stem + "_norare.json")
    report = prepare_lvis_base(source, target)
    err.print(
        f"removed {report.removed:,} boxes of {report.rare_categories} rare categories, kept "
        f"{report.kept:,} boxes on {report.images:,} images -> {target}"
    )


@app.command("prepare-imagenet-lvis")
def prepare_imagenet_lvis_command(
    images: Annotated[Path, typer.Option(help="Folder of <wnid>/<file> images.")],
    categories: Annotated[Path, typer.Option(help="LVIS file whose categories (synsets) to use.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Image-info JSON to write.")],
    synset_map: Annotated[
        Path | None,
        typer.Option(help="wnid -> WordNet synset, one 'wnid synset' per line (default: nltk)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Threads reading image sizes.")] = 8,
) -> None:
    """ImageNet folders -> image-info JSON with one image-level LVIS label per image."""
    from decola_core.data.prepare import prepare_imagenet_lvis
    from decola_core.utils.progress import progress_bar

    with progress_bar("img", console=err) as bar:
        task = bar.add_task("image sizes", total=None)
        counts = prepare_imagenet_lvis(
            images,
            categories,
            output,
            synset_map=synset_map,
            workers=workers,
            on_images=lambda n: bar.advance(task, n),
            on_start=lambda n: bar.update(task, total=n),
        )
    err.print(
        f"{counts['images']:,} images of {counts['classes']} LVIS classes "
        f"({counts['skipped_folders']} folders without an LVIS synset skipped) -> {output}"
    )


@app.command("check")
def check_command(
    annotations: Annotated[Path, typer.Argument(help="LVIS/COCO-format annotation file.")],
    images: Annotated[Path, typer.Option(help="Image root the file names are relative to.")],
    workers: Annotated[int | None, typer.Option(min=1, help="Threads (default: cores).")] = None,
) -> None:
    """Open every image; unreadable ones go to <annotations>.skip.txt, which loaders honour."""
    from decola_core.data.images import skip_list_path
    from decola_core.data.prepare import check_images
    from decola_core.utils.progress import progress_bar

    with progress_bar("img", console=err) as bar:
        task = bar.add_task("check", total=None)
        bad = check_images(
            annotations, images, workers=workers, on_images=lambda n: bar.advance(task, n)
        )
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
def embed_command(
    output: Annotated[Path, typer.Option("--output", "-o", help=".npy file to write.")],
    clip_weights: Annotated[
        str, typer.Option(help="Local CLIP weights (.pt/.safetensors) or a zoo name.")
    ],
    names: Annotated[Path | None, typer.Option(help="Text file, one class name per line.")] = None,
    annotations: Annotated[
        Path | None, typer.Option(help="LVIS/COCO file or category list (names by id).")
    ] = None,
    template: Annotated[str, typer.Option(help="Prompt; {} is the class name.")] = "a {}",
    model: Annotated[str, typer.Option(help="open_clip model name.")] = "ViT-B-32-quickgelu",
    object_output: Annotated[
        Path | None,
        typer.Option(help='Also write the "a object" row (the template with "object").'),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    cache_dir: options.CacheDirOption = None,
) -> None:
    """Class-name CLIP embeddings (rows in category-id order, not normalised) as .npy."""
    from decola_cli.settings import DecolaSettings, build_settings
    from decola_core.errors import ConfigError
    from decola_core.text.embeddings import embed_names, read_class_names, write_embeddings
    from decola_core.text.encoder import ClipTextEncoder
    from decola_core.zoo import resolve_weights

    if (names is None) == (annotations is None):
        raise ConfigError("give exactly one of --names FILE or --annotations FILE")
    settings = build_settings(DecolaSettings, cache_dir=cache_dir)
    class_names = read_class_names(names or annotations)
    weights = resolve_weights(clip_weights, settings.cache_dir, offline=settings.offline)
    encoder = ClipTextEncoder(model, weights, device=device)
    err.print(f"embedding {len(class_names):,} names as {template!r} with {model} ({weights})")
    array = embed_names(encoder, class_names, template)
    write_embeddings(output, array)
    err.print(f"wrote {output} {array.shape}")
    if object_output is not None:
        write_embeddings(object_output, embed_names(encoder, ["object"], template))
        err.print(f"wrote {object_output} (1, {array.shape[1]})")
