"""``decola predict``: detections as JSON and pictures for image files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from decola_cli import options
from decola_cli.console import err

EPILOG = """[bold]Examples[/]

  decola predict photo.jpg --weights decola-phase1-lbase-r50 --classes "cola,fork,table"
  decola predict photos/ --weights decola-phase2-lbase-r50 --general --threshold 0.5
  decola predict datasets/toy/images/toy_val_0000.png --config toy/DECOLA_PHASE1_Toy \\
      --weights runs/toy/model_final.pth --classes red_square,green_circle
"""


def predict_command(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    weights: Annotated[str, typer.Option("--weights", "-w", help="Model: path or zoo name.")],
    classes: Annotated[
        list[str] | None,
        typer.Option(
            help="Class names of the model's vocabulary, comma-separated or repeated "
            "(default: all)."
        ),
    ] = None,
    vocabulary: Annotated[
        str,
        typer.Option(
            help="model (or lvis): --classes come from the model's class-embedding file; "
            "custom: any names, embedded with --clip-weights (cached)."
        ),
    ] = "model",
    clip_weights: Annotated[
        str | None, typer.Option(help="CLIP weights for --vocabulary custom (path or zoo name).")
    ] = None,
    clip_model: Annotated[
        str | None, typer.Option(help="open_clip model (default: ViT-B-32-quickgelu).")
    ] = None,
    template: Annotated[str, typer.Option(help="Prompt for custom names.")] = "a {}",
    conditioned: Annotated[
        bool | None,
        typer.Option(
            "--conditioned/--general",
            help="Prompt the model with --classes (phase-1 class mode) or detect all objects "
            "and keep those classes (object mode) (default: conditioned when --classes is given).",
        ),
    ] = None,
    threshold: Annotated[float, typer.Option(help="Lowest score kept.")] = 0.3,
    max_dets: Annotated[int, typer.Option(help="Most detections kept per image.")] = 100,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for <image>.json and <image>.png.")
    ] = Path("predictions"),
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    config: options.ConfigOption = None,
    phase: options.PhaseOption = None,
    dataset: options.DatasetOption = None,
    backbone: options.BackboneOption = None,
    baseline: options.BaselineOption = None,
    overrides: options.SetOption = None,
    data_root: options.DataRootOption = None,
    cache_dir: options.CacheDirOption = None,
) -> None:
    """Detect objects in images: a JSON of detections and an annotated PNG per image."""
    from decola_cli.settings import PredictSettings, build_settings

    names = [n.strip() for item in classes or [] for n in item.split(",") if n.strip()]
    settings = build_settings(
        PredictSettings,
        inputs=inputs,
        weights=weights,
        classes=names or None,
        vocabulary=vocabulary,
        clip_weights=clip_weights,
        clip_model=clip_model,
        template=template,
        conditioned=conditioned,
        threshold=threshold,
        max_dets=max_dets,
        output=output,
        device=device,
        config=config,
        phase=phase,
        dataset=dataset,
        backbone=backbone,
        baseline=baseline,
        overrides=overrides,
        data_root=data_root,
        cache_dir=cache_dir,
    )
    from decola_core.data.toy import ensure_toy_dataset, recipe_uses_toy_data
    from decola_core.engine.predict import PredictJob, collect_images, run_predict
    from decola_core.modeling.predictor import Predictor
    from decola_core.utils.progress import progress_bar
    from decola_core.zoo import resolve_weights

    images = collect_images(settings.inputs)
    weights_file = resolve_weights(settings.weights, settings.cache_dir, offline=settings.offline)
    recipe = settings.resolve_recipe(weights_file)
    if recipe_uses_toy_data(recipe):
        ensure_toy_dataset(settings.data_root)
    predictor = Predictor.from_recipe(
        recipe, weights_file, data_root=settings.data_root, device=settings.device
    )
    if settings.vocabulary == "custom":
        _use_custom_vocabulary(predictor, settings)
    job = PredictJob(
        images=images,
        output_dir=settings.output,
        classes=settings.classes,
        conditioned=settings.classes is not None and settings.conditioned is not False,
        threshold=settings.threshold,
        max_detections=settings.max_dets,
    )
    mode = "conditioned on " + ", ".join(job.classes) if job.conditioned else "object mode"
    err.print(f"detecting in {len(images):,} image(s) with {recipe.name} ({mode})")
    found = 0
    with progress_bar("img", console=err) as bar:
        task = bar.add_task("predict", total=len(images))

        def advance(_path, detections) -> None:
            nonlocal found
            found += len(detections)
            bar.advance(task)

        run_predict(predictor, job, on_image=advance)
    err.print(f"{found:,} detection(s); wrote <image>.json and <image>.png to {settings.output}")


def _use_custom_vocabulary(predictor, settings) -> None:
    from decola_core.engine.predict import use_custom_vocabulary
    from decola_core.errors import ConfigError
    from decola_core.zoo import resolve_weights

    if not settings.classes or not settings.clip_weights:
        raise ConfigError("--vocabulary custom needs --classes NAMES and --clip-weights FILE")
    weights = resolve_weights(settings.clip_weights, settings.cache_dir, offline=settings.offline)
    hit = use_custom_vocabulary(
        predictor,
        settings.classes,
        weights,
        clip_model=settings.clip_model,
        template=settings.template,
        cache_dir=settings.cache_dir,
        device=settings.device,
    )
    err.print(
        f"custom vocabulary of {len(settings.classes)} name(s) ({'cached' if hit else 'embedded'})"
    )
