"""``decola predict``: detections as JSON and pictures for image files."""

from __future__ import annotations

from decola_cli.command import settings_command
from decola_cli.console import err
from decola_cli.settings import PredictSettings
from decola_core.jobs import PredictJob

EPILOG = """[bold]Examples[/]

  decola predict photo.jpg --weights decola-phase1-lbase-r50 --classes "cola,fork,table"
  decola predict photos/ --weights decola-phase2-lbase-r50 --general --threshold 0.5
  decola predict datasets/toy/images/toy_val_0000.png --config toy/DECOLA_PHASE1_Toy \\
      --weights runs/toy/model_final.pth --classes red_square,green_circle
"""


@settings_command(PredictSettings, defaults=(PredictJob,))
def predict_command(settings: PredictSettings) -> None:
    """Detect objects in images: a JSON of detections and an annotated PNG per image."""
    from decola_core.api import Detector
    from decola_core.engine.predict import collect_images
    from decola_core.errors import ConfigError
    from decola_core.utils.progress import progress_bar

    images = collect_images(settings.inputs)
    detector = Detector.from_pretrained(
        settings.weights,
        config=settings.recipe_name() if settings.uses_recipe_selection() else None,
        overrides=settings.overrides,
        data_root=settings.data_root,
        cache_dir=settings.cache_dir,
        offline=settings.offline,
        device=settings.device,
        trusted=bool(settings.trust_weights),
    )
    if settings.vocabulary == "custom":
        if not settings.classes or not settings.clip_weights:
            raise ConfigError("--vocabulary custom needs --classes NAMES and --clip-weights FILE")
        hit = detector.set_vocabulary(
            settings.classes,
            settings.clip_weights,
            clip_model=settings.clip_model,
            template=settings.template,
            cache_dir=settings.cache_dir,
            offline=settings.offline,
        )
        how = "cached" if hit else "embedded"
        err.print(f"custom vocabulary of {len(settings.classes)} name(s) ({how})")
    extra = {"threshold": settings.threshold, "max_detections": settings.max_dets}
    job = PredictJob(
        images=images,
        output_dir=settings.output_dir,
        classes=settings.classes,
        conditioned=settings.classes is not None and settings.conditioned is not False,
        **{k: v for k, v in extra.items() if v is not None},
    )
    mode = "conditioned on " + ", ".join(job.classes) if job.conditioned else "object mode"
    err.print(f"detecting in {len(images):,} image(s) with {detector.recipe_name} ({mode})")
    found = 0
    with progress_bar("img", console=err) as bar:
        task = bar.add_task("predict", total=len(images))

        def advance(_path, detections) -> None:
            nonlocal found
            found += len(detections)
            bar.advance(task)

        detector.predict_files(job, on_image=advance)
    err.print(f"{found:,} detection(s); wrote <image>.json and <image>.png to {job.output_dir}")
