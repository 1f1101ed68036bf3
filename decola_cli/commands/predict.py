"""``decola predict``: detections as JSON and pictures for image files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from decola_cli.command import option, settings_command
from decola_cli.console import err
from decola_cli.settings import (
    DecolaSettings,
    NetworkRunSettings,
    TrustSettings,
    VocabularySettings,
)
from decola_core.jobs import PredictJob


class PredictSettings(NetworkRunSettings, VocabularySettings, TrustSettings, DecolaSettings):
    """``decola predict``: detect in image files and draw the results."""

    inputs: list[Path] = option(
        help="Image files or folders of images.", argument=True, default=...
    )
    weights: str | None = option("--weights", "-w", help="Model: path or zoo name.")
    backend: Literal["torch", "onnx", "torchscript"] = option(
        "--backend",
        help="torch (--weights), or a file of decola export run as is (--model): onnx "
        "(onnxruntime) or torchscript.",
        default="torch",
    )
    model: Path | None = option(
        "--model", help="The exported file for --backend onnx|torchscript (FILE.json beside it)."
    )
    conditioned: bool | None = option(
        "--conditioned/--general",
        help="Prompt the model with --classes (phase-1 class mode) or detect all objects and keep "
        "those classes (object mode) (default: conditioned when --classes is given).",
    )
    threshold: float | None = option("--threshold", help="Lowest score kept.", min=0.0, max=1.0)
    max_dets: int | None = option("--max-dets", help="Most detections kept per image.", min=1)
    output_dir: Path = option(
        "--output-dir",
        "-o",
        help="Folder for <image>.json and <image>.png.",
        default=Path("predictions"),
    )
    device: str = option("--device", help="cpu, cuda or cuda:N.", default="cpu")
    masks: Literal["model", "sam"] = option(
        "--masks",
        help="model: the detector's own masks (CenterNet2 models); sam: Segment Anything "
        "prompted with each box (pip install 'decola[sam]').",
        default="model",
    )
    sam_checkpoint: str | None = option(
        "--sam-checkpoint", help="SAM weights for --masks sam: a file or zoo name (sam-vit-h)."
    )
    sam_model: Literal["vit_h", "vit_l", "vit_b"] | None = option(
        "--sam-model", help="SAM variant (default: from the checkpoint's file name)."
    )


EPILOG = """[bold]Examples[/]

  decola predict photo.jpg --weights decola-phase1-lbase-r50 --classes "cola,fork,table"
  decola predict photos/ --weights decola-phase2-lbase-r50 --general --threshold 0.5
  decola predict photo.jpg --backend onnx --model decola.onnx --threshold 0.5
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

    if settings.masks == "sam" and not settings.sam_checkpoint:
        raise ConfigError("--masks sam needs --sam-checkpoint FILE (or a zoo name: sam-vit-h)")
    exported = settings.backend != "torch"
    if exported and (settings.model is None or settings.weights is not None):
        raise ConfigError(f"--backend {settings.backend} runs --model FILE (not --weights)")
    if not exported and (settings.weights is None or settings.model is not None):
        raise ConfigError("--backend torch needs --weights (--model is for onnx|torchscript)")
    images = collect_images(settings.inputs)
    if exported:
        detector = Detector.from_exported(settings.model)
        if detector.predictor.model.format != settings.backend:
            raise ConfigError(
                f"{settings.model} is a {detector.predictor.model.format} file, not "
                f"{settings.backend}"
            )
    else:
        detector = Detector.from_pretrained(
            settings.weights,
            config=settings.recipe_name() if settings.uses_recipe_selection() else None,
            overrides=settings.recipe_overrides(),
            data_root=settings.data_root,
            cache_dir=settings.cache_dir,
            offline=settings.offline,
            device=settings.device,
            trusted=bool(settings.trust_weights),
            allow_embedding_mismatch=bool(settings.allow_embedding_mismatch),
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
    if settings.masks == "sam":
        detector.use_sam(
            settings.sam_checkpoint,
            model_type=settings.sam_model,
            cache_dir=settings.cache_dir,
            offline=settings.offline,
        )
        err.print(f"masks from Segment Anything ({settings.sam_checkpoint})")
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
