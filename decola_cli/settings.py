"""What the commands' settings share: the base models (environment prefix ``DECOLA_``, unknown
keys refused), the data, cache, offline, recipe, trust and process options. Each command module
defines its own settings model from these; every field there is one option
(:func:`~decola_cli.command.option`), declared once. A value comes from the command line, else
from ``DECOLA_<FIELD>``, else from the default; None means "the core job's default"."""

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
CUSTOM_PANEL = "Your own data (COCO/LVIS format)"


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
    detector: str | None = option(
        "--detector",
        help="detr | c2 | c2+detic: Deformable DETR (default) or CenterNet2 (+ Detic's "
        "image-label loss).",
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
            "detector": self.detector,
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

    def recipe_overrides(self) -> list[str]:
        """The recipe overrides these settings make (``--set`` and the options that set fields)."""
        return list(self.overrides)

    def load_recipe(self, extra_overrides: list[str] | None = None) -> Recipe:
        """Load and validate the selected recipe with the overrides applied."""
        from decola_core.config.loader import load_recipe

        return load_recipe(self.recipe_name(), [*self.recipe_overrides(), *(extra_overrides or [])])


class NetworkRunSettings(RecipeSettings):
    """Recipe settings of the commands that run the network (train, eval, predict, self-label)."""

    compile: bool | None = option(
        "--compile",
        help="Run the network through torch.compile (solver.compile); pays off on GPUs, and the "
        "first batches of each new image size wait for compilation.",
        panel=RECIPE_PANEL,
    )

    def recipe_overrides(self) -> list[str]:
        return [*super().recipe_overrides(), *(["solver.compile=true"] if self.compile else [])]


class TrustSettings(Settings):
    trust_weights: bool | None = option(
        "--trust-weights",
        help="Allow pickled weights (.pkl, e.g. detectron2's ImageNet-1k R50 backbone); a pickle "
        "can run code when loaded, so only for files you trust.",
    )
    allow_embedding_mismatch: bool | None = option(
        "--allow-embedding-mismatch",
        help="Load weights trained with class embeddings of another text encoder than the "
        "model's (refused by default: the classes would be scored in the wrong space).",
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


class ClipTextSettings(Settings):
    """A local CLIP text tower that embeds class names (cached by weights, template, names)."""

    clip_weights: str | None = option(
        "--clip-weights",
        help="CLIP weights (path or zoo name) that embed class names: --vocabulary custom, or "
        "the categories of --train-json.",
    )
    clip_model: str | None = option(
        "--clip-model", help="open_clip model (default: ViT-B-32-quickgelu)."
    )
    template: str = option("--template", help="Prompt for the class names.", default="a {}")


class VocabularySettings(ClipTextSettings):
    """The classes to detect: names of the model's vocabulary, or any names embedded with a
    local CLIP text tower (``--vocabulary custom``)."""

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

    @field_validator("classes", mode="after")
    @classmethod
    def _split(cls, value: list[str] | None) -> list[str] | None:
        names = [n.strip() for item in value or [] for n in item.split(",") if n.strip()]
        return names or None


class CustomDataSettings(ClipTextSettings):
    """Fine-tuning on a user's COCO/LVIS-format box set (core: CustomData)."""

    train_json: Path | None = option(
        "--train-json",
        help="Your training boxes (COCO/LVIS JSON); decola derives the vocabulary, embeddings, "
        "federated-loss weights and protocol from it.",
        panel=CUSTOM_PANEL,
    )
    train_images: Path | None = option(
        "--train-images", help="Folder of the training images.", panel=CUSTOM_PANEL
    )
    val_json: Path | None = option(
        "--val-json", help="Validation boxes (same categories).", panel=CUSTOM_PANEL
    )
    val_images: Path | None = option(
        "--val-images", help="Folder of the validation images.", panel=CUSTOM_PANEL
    )
    embeddings: Path | None = option(
        "--embeddings",
        help="Your own class embeddings (.npy, one row per category in id order) instead of "
        "--clip-weights.",
        panel=CUSTOM_PANEL,
    )
    epochs: float | None = option(
        "--epochs",
        help="Passes over the training images (sets the schedule; default: the recipe's).",
        panel=CUSTOM_PANEL,
    )

    def uses_custom_data(self) -> bool:
        given = [self.val_json, self.val_images, self.embeddings, self.epochs]
        if self.train_json is None and self.train_images is None:
            if any(v is not None for v in given):
                raise ConfigError(
                    "--val-json/--val-images/--embeddings/--epochs go with --train-json and "
                    "--train-images"
                )
            return False
        if self.train_json is None or self.train_images is None:
            raise ConfigError("give --train-json and --train-images together")
        return True
