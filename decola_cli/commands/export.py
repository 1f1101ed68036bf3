"""``decola export``: a trained detector as an ONNX or TorchScript file, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from decola_cli.command import job_values, option, settings_command
from decola_cli.console import err
from decola_cli.settings import (
    DecolaSettings,
    RecipeSettings,
    TrustSettings,
    VocabularySettings,
)
from decola_core.jobs import ExportJob


class ExportSettings(RecipeSettings, VocabularySettings, TrustSettings, DecolaSettings):
    """``decola export``."""

    weights: str = option("--weights", "-w", help="Model: path or zoo name.", default=...)
    output: Path = option("--output", "-o", help="The exported file (FILE.json beside it).",
                          default=...)  # fmt: skip
    format: Literal["onnx", "torchscript"] = option(
        "--format", help="onnx (needs the export extra) or torchscript.", default="onnx"
    )
    mode: Literal["object", "conditioned"] = option(
        "--mode",
        help="object: all classes of the vocabulary, built in; conditioned: the prompt class "
        "ids are an input (phase-1 class mode).",
        default="object",
    )
    image_size: list[int] = option(
        "--image-size",
        help="Fixed input height and width, e.g. --image-size 800 1333 (the default).",
        min=32,
        default_factory=list,
    )
    dynamic: bool = option(
        "--dynamic", help="Any batch size and image size (checked at two sizes).", default=False
    )
    opset: int | None = option("--opset", help="ONNX opset, 16 or newer (default 18).", min=1)
    with_preprocess: bool = option(
        "--with-preprocess",
        help="Take uint8 RGB (B, H, W, 3) images; normalisation inside the graph.",
        default=False,
    )
    embeddings_input: bool = option(
        "--embeddings-input",
        help="Conditioned mode: the vocabulary's embedding matrix is an input too.",
        default=False,
    )
    embeddings: Path | None = option(
        "--embeddings", help="An (N, D) .npy of class embeddings to build in (rows = --classes)."
    )
    tolerance: float | None = option(
        "--tolerance", help="Largest relative difference from PyTorch accepted (default 1e-4).",
        min=0.0,
    )  # fmt: skip


EPILOG = """[bold]Examples[/]

  decola export --weights decola-phase2-lbase-r50 --output decola.onnx
  decola export --weights decola-phase1-lbase-r50 --mode conditioned --dynamic --output p1.onnx
  decola export --weights runs/toy/model_final.pth --format torchscript --image-size 128 160 \\
      --output toy.pt
  decola export --weights W --classes cola,fork --vocabulary custom --clip-weights clip.pt -o f.onnx
"""


@settings_command(ExportSettings, defaults=(ExportJob,))
def export_command(settings: ExportSettings) -> None:
    """Export a detector to ONNX or TorchScript, verified against PyTorch (FILE + FILE.json)."""
    from decola_core.errors import ConfigError
    from decola_core.export.job import run_export

    if settings.dynamic and settings.image_size:
        raise ConfigError("--dynamic and --image-size exclude each other")
    if settings.image_size and len(settings.image_size) != 2:
        raise ConfigError(f"--image-size takes a height and a width (got {settings.image_size})")
    values = job_values(settings, ExportJob)
    if not settings.image_size:
        values.pop("image_size", None)
    job = ExportJob(
        config=settings.recipe_name() if settings.uses_recipe_selection() else None, **values
    )
    meta = run_export(job)
    parity = meta["parity"]
    err.print(
        f"[bold green]exported[/] {settings.output} ({meta['format']}, {meta['mode']} mode); "
        f"parity: boxes {parity['max_abs_diff_boxes']:.1e} px, scores "
        f"{parity['max_abs_diff_scores']:.1e}; metadata {settings.output}.json"
    )
