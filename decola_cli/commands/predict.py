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
    from decola_core.data.toy import ensure_toy_dataset
    from decola_core.engine.predict import PredictJob, collect_images, run_predict
    from decola_core.modeling.predictor import Predictor
    from decola_core.utils.progress import progress_bar
    from decola_core.zoo import resolve_weights

    images = collect_images(settings.inputs)
    weights_file = resolve_weights(settings.weights, settings.cache_dir, offline=settings.offline)
    recipe = settings.resolve_recipe(weights_file)
    if "toy" in recipe.model.classifier.embeddings:
        ensure_toy_dataset(settings.data_root)
    predictor = Predictor.from_recipe(
        recipe, weights_file, data_root=settings.data_root, device=settings.device
    )
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
