"""The settings of every command: one pydantic-settings model per command whose fields are its
options, each declared once (:func:`~decola_cli.command.option`). A value comes from the command
line, else from ``DECOLA_<FIELD>`` in the environment, else from the default; a default of None
means "the core job's default" (shown in ``--help``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import AfterValidator, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from decola_cli.command import ENV_PREFIX, option
from decola_core.errors import ConfigError

if TYPE_CHECKING:  # annotations only: recipes are loaded by the commands that need one
    from decola_core.config.schema import Recipe

RECIPE_PANEL = "Recipe selection"
RUN_PANEL = "Processes"


class Settings(BaseSettings):
    """Base of every command's settings: DECOLA_ environment variables, unknown keys refused."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")


#: A folder given by the user: ``~`` expanded.
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]


class CacheSettings(Settings):
    cache_dir: UserPath = option(
        "--cache-dir",
        help="Downloads and caches [env DECOLA_CACHE_DIR].",
        default=Path("~/.cache/decola"),
    )


class OfflineSettings(CacheSettings):
    offline: bool = option(
        "--offline/--online",
        help="Refuse every network access [env DECOLA_OFFLINE].",
        default=False,
    )


class DecolaSettings(OfflineSettings):
    """Settings of the commands that read data sets and weights."""

    data_root: UserPath = option(
        "--data-root",
        help="Root of every dataset path [env DECOLA_DATA_ROOT].",
        default=Path("./datasets"),
    )


class RecipeSettings(Settings):
    """Settings of commands that work on a recipe (``--config`` or the shorthands)."""

    config: str | None = option(
        "--config",
        "-c",
        help="Recipe name (see 'decola config list') or YAML path [env DECOLA_CONFIG].",
        panel=RECIPE_PANEL,
    )
    phase: int | None = option(
        "--phase", help="DECOLA phase: 1 or 2.", min=1, max=2, panel=RECIPE_PANEL
    )
    dataset: str | None = option(
        "--dataset",
        help="Training data of the recipe: lvis | lvis-base | toy (default: lvis-base).",
        panel=RECIPE_PANEL,
    )
    backbone: str | None = option(
        "--backbone",
        help="r50-21k | r50-1k | swin-b | swin-l (default: r50-21k).",
        panel=RECIPE_PANEL,
    )
    baseline: str | None = option(
        "--baseline", help="boxsup | detic (BoxSup + self-training).", panel=RECIPE_PANEL
    )
    labels: str | None = option(
        "--labels",
        help="Phase 2 pseudo labels: online | offline (default: online).",
        panel=RECIPE_PANEL,
    )
    overrides: list[str] = option(
        "--set",
        "-s",
        help="Override a recipe field, e.g. --set model.decola.per_prompt_topk=100 (repeatable).",
        metavar="KEY=VALUE",
        panel=RECIPE_PANEL,
        default_factory=list,
    )

    #: The recipe when neither --config nor a shorthand is given (None: refuse).
    default_recipe: ClassVar[str | None] = None

    def shorthand(self) -> dict[str, object]:
        return {
            "phase": self.phase,
            "dataset": self.dataset,
            "backbone": self.backbone,
            "baseline": self.baseline,
            "labels": self.labels,
        }

    def recipe_name(self) -> str:
        """The recipe named by ``--config`` or resolved from the shorthands."""
        from decola_core.config.shorthand import recipe_for

        shorthand = self.shorthand()
        if self.config is not None:
            used = [f"--{k}" for k, v in shorthand.items() if v is not None]
            if used:
                raise ConfigError(f"--config cannot be combined with {', '.join(used)}")
            return self.config
        if self.default_recipe and all(v is None for v in shorthand.values()):
            return self.default_recipe
        return recipe_for(**shorthand)

    def uses_recipe_selection(self) -> bool:
        return self.config is not None or any(v is not None for v in self.shorthand().values())

    def load_recipe(self, extra_overrides: list[str] | None = None) -> Recipe:
        """Load and validate the selected recipe with the ``--set`` overrides applied."""
        from decola_core.config.loader import load_recipe

        return load_recipe(self.recipe_name(), [*self.overrides, *(extra_overrides or [])])


class TrustSettings(Settings):
    trust_weights: bool | None = option(
        "--trust-weights",
        help="Allow pickled weights (.pkl, e.g. detectron2's ImageNet-1k R50 backbone); a pickle "
        "can run code when loaded, so only for files you trust.",
    )


class LaunchSettings(DecolaSettings):
    """How many processes a job runs in (core: LaunchOptions)."""

    num_gpus: int | None = option(
        "--num-gpus", help="Worker processes per machine (one per GPU).", min=1, panel=RUN_PANEL
    )


class MultiNodeSettings(LaunchSettings):
    num_machines: int | None = option(
        "--num-machines", help="Machines of a manual multi-node run.", min=1, panel=RUN_PANEL
    )
    machine_rank: int | None = option(
        "--machine-rank", help="This machine's rank (multi-node).", min=0, panel=RUN_PANEL
    )
    dist_url: str | None = option(
        "--dist-url", help="host:port of machine 0 (multi-node).", panel=RUN_PANEL
    )


class TrainSettings(RecipeSettings, TrustSettings, MultiNodeSettings):
    """``decola train``."""

    weights: str | None = option(
        "--weights", "-w", help="Initial weights (path or zoo name); phase 2: the phase-1 model."
    )
    pseudo_labels: str | None = option(
        "--pseudo-labels",
        help="Phase 2 offline: pseudo-annotation file (path) or catalog dataset name.",
    )
    output_dir: Path | None = option("--output-dir", help="Run folder (default: output/<recipe>).")
    max_iter: int | None = option("--max-iter", help="Stop after this many iterations.", min=1)
    checkpoint_period: int | None = option(
        "--checkpoint-period", help="Iterations between checkpoints (default: the recipe's).", min=1
    )
    resume: bool | None = option(
        "--resume/--no-resume", help="Continue from the newest checkpoint (default: yes)."
    )
    num_workers: int | None = option(
        "--num-workers", help="Data-loader processes per GPU (default: the recipe's).", min=0
    )
    max_bad_images: int | None = option(
        "--max-bad-images", help="Unreadable images to skip before failing.", min=0
    )
    seed: int | None = option("--seed", help="Base seed (default: the recipe's).")
    wandb: bool | None = option(
        "--wandb/--no-wandb", help="Log to Weights & Biases (default: the recipe's)."
    )
    eval_only: bool = option(
        "--eval-only",
        help="Evaluate --weights (default: the run's model_final.pth) on the recipe's test set "
        "instead of training.",
        default=False,
    )


class EvalSettings(RecipeSettings, TrustSettings, LaunchSettings):
    """``decola eval``: score a predictions file, or run a model over a dataset and score it."""

    predictions: Path | None = option(
        "--predictions", help="Score this results file (JSON array, .jsonl or shard folder)."
    )
    annotations: Path | None = option("--annotations", help="LVIS/COCO-format ground truth.")
    images: Path | None = option("--images", help="Image folder for --annotations (model mode).")
    eval_dataset: str | None = option(
        "--eval-dataset",
        help="Catalog set to evaluate on, e.g. lvis_v1_val (default: the recipe's test set).",
    )
    weights: str | None = option(
        "--weights", "-w", help="Checkpoint path or zoo name (model mode)."
    )
    conditioned: bool | None = option(
        "--conditioned/--no-conditioned",
        help="Prompt each image with its GT classes (c-mAP) (default: the recipe's).",
    )
    k: list[int] = option(
        "--k",
        help="c-mAP budgets: detections per image, e.g. --k 10 20 50 100 300.",
        min=1,
        default_factory=list,
    )
    max_dets: int | None = option(
        "--max-dets", help="Detections per image (default: the recipe's).", min=1
    )
    per_class_cap: int | None = option(
        "--per-class-cap", help="Detections per (image, class); -1 = none."
    )
    protocol: Literal["standard", "fixed", "coco"] | None = option(
        "--protocol",
        help="standard | fixed (top 10 000 per class, no per-image cap) | coco.",
    )
    backend: Literal["decola", "faster-coco-eval", "lvis-api"] | None = option(
        "--backend", help="decola | faster-coco-eval | lvis-api (the slow reference)."
    )
    output_dir: Path | None = option(
        "--output-dir",
        help="Where predictions and metrics go (default: <recipe output>/eval_<dataset>).",
    )
    output: Path | None = option(
        "--output", "-o", help="metrics.json path (scoring mode; default: beside the file)."
    )
    max_images: int | None = option("--max-images", help="Only the first N images.", min=1)
    max_bad_images: int | None = option(
        "--max-bad-images", help="Unreadable images to skip before failing.", min=0
    )
    wandb: bool | None = option("--wandb/--no-wandb", help="Log the metrics to W&B.")


class SelfLabelSettings(RecipeSettings, TrustSettings, LaunchSettings):
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
    images: Path | None = option("--images", help="Image folder for --image-info.")
    max_size: int | None = option(
        "--max-size",
        help="Longest side after resizing (default: the recipe's test.max_size).",
        min=1,
    )
    batch_size: int | None = option("--batch-size", help="Images per forward pass.", min=1)
    shard_images: int | None = option("--shard-images", help="Images per output shard.", min=1)
    max_bad_images: int | None = option(
        "--max-bad-images", help="Unreadable images to skip before failing.", min=0
    )
    postprocess: bool = option(
        "--postprocess", help="Then convert, merge and dedup.", default=False
    )


class PredictSettings(RecipeSettings, TrustSettings, DecolaSettings):
    """``decola predict``: detect in image files and draw the results."""

    inputs: list[Path] = option(
        help="Image files or folders of images.", argument=True, default=...
    )
    weights: str = option("--weights", "-w", help="Model: path or zoo name.", default=...)
    classes: list[str] | None = option(
        "--classes",
        help="Class names of the vocabulary, comma-separated or repeated (default: all).",
    )
    vocabulary: Literal["model", "lvis", "custom"] = option(
        "--vocabulary",
        help="model (or lvis): --classes come from the model's class-embedding file; custom: any "
        "names, embedded with --clip-weights (cached).",
        default="model",
    )
    clip_weights: str | None = option(
        "--clip-weights", help="CLIP weights for --vocabulary custom (path or zoo name)."
    )
    clip_model: str | None = option(
        "--clip-model", help="open_clip model (default: ViT-B-32-quickgelu)."
    )
    template: str = option("--template", help="Prompt for custom names.", default="a {}")
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

    @field_validator("classes", mode="after")
    @classmethod
    def _split(cls, value: list[str] | None) -> list[str] | None:
        names = [n.strip() for item in value or [] for n in item.split(",") if n.strip()]
        return names or None


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
        help="Drop (and count) boxes with NaN or non-positive size instead of refusing the file.",
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


class ConfigListSettings(Settings):
    filter_text: str | None = option("--filter", "-f", help="Only names containing this text.")


class ConfigShowSettings(RecipeSettings):
    name: str | None = option(
        help="Recipe name or YAML path (or use --config / the shorthands).", argument=True
    )
    output: Path | None = option("--output", "-o", help="Write the YAML here instead of printing.")


class ConfigImportSettings(Settings):
    original: Path = option(
        help="An original DECOLA/detectron2 YAML (its _BASE_ files beside it).",
        argument=True,
        default=...,
    )
    output: Path | None = option(
        "--output", "-o", help="Write the recipe here instead of printing."
    )
    strict: bool = option(
        "--strict", help="Fail (exit 2) when the file has unknown keys.", default=False
    )
    verbose: bool = option(
        "--verbose", "-v", help="Also list the keys that were ignored.", default=False
    )


class ChecksSettings(DecolaSettings):
    as_json: bool = option("--json", help="Print the report as JSON.", default=False)


class ZooSettings(OfflineSettings):
    """``decola zoo``: where artefacts go and whether the network may be used."""

    directory: Path | None = option("--dir", help="Store folder (default: <cache dir>/zoo).")

    def store(self) -> Path:
        from decola_core.zoo.resolve import zoo_store

        return self.directory.expanduser() if self.directory else zoo_store(self.cache_dir)


class ZooListSettings(ZooSettings):
    kind: str | None = option(
        "--kind", help="checkpoint | backbone | pseudo-labels | metadata | clip"
    )
    markdown: bool = option(
        "--markdown", help="Print a Markdown table (as in README).", default=False
    )


class ZooNameSettings(ZooSettings):
    name: str = option(help="Artefact name.", argument=True, default=...)


class ZooDownloadSettings(ZooSettings):
    names: list[str] = option(help="Artefact names.", argument=True, default=...)
    force: bool = option("--force", help="Download again even if cached.", default=False)


class ZooVerifySettings(ZooSettings):
    names: list[str] | None = option(
        help="Artefact names (default: every cached one).", argument=True
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
