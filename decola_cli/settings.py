"""pydantic-settings models, one per command: CLI values override ``DECOLA_*`` environment
variables, which override the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from decola_core.config.schema import Recipe
from decola_core.errors import ConfigError

ENV_PREFIX = "DECOLA_"


class DecolaSettings(BaseSettings):
    """Settings every command shares."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_root: Path = Field(Path("./datasets"), description="Root of all dataset paths.")
    cache_dir: Path = Field(Path("~/.cache/decola"), description="Downloads and caches.")
    offline: bool = Field(False, description="Refuse every network access.")

    @field_validator("data_root", "cache_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class RecipeSettings(DecolaSettings):
    """Settings of commands that work on a recipe (``--config`` or the shorthands)."""

    config: str | None = None
    phase: int | None = None
    dataset: str | None = None
    backbone: str | None = None
    baseline: str | None = None
    labels: str | None = None
    overrides: list[str] = Field(default_factory=list)

    def recipe_name(self) -> str:
        """The recipe named by ``--config`` or resolved from the shorthands."""
        from decola_core.config.shorthand import recipe_for

        shorthand = {
            "phase": self.phase,
            "dataset": self.dataset,
            "backbone": self.backbone,
            "baseline": self.baseline,
            "labels": self.labels,
        }
        if self.config is not None:
            used = [f"--{k}" for k, v in shorthand.items() if v is not None]
            if used:
                raise ConfigError(f"--config cannot be combined with {', '.join(used)}")
            return self.config
        return recipe_for(**shorthand)

    def load_recipe(self) -> Recipe:
        """Load and validate the selected recipe with the ``--set`` overrides applied."""
        from decola_core.config.loader import load_recipe

        return load_recipe(self.recipe_name(), self.overrides)


class ConfigShowSettings(RecipeSettings):
    output: Path | None = None


class ConfigImportSettings(DecolaSettings):
    original: Path
    output: Path | None = None
    strict: bool = False


class ChecksSettings(DecolaSettings):
    as_json: bool = False


SettingsT = TypeVar("SettingsT", bound=DecolaSettings)


def build_settings(cls: type[SettingsT], **cli_values: Any) -> SettingsT:
    """Instantiate ``cls`` from CLI values (None = not given) over environment and defaults."""
    given = {k: v for k, v in cli_values.items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            name = str(item["loc"][0]) if item["loc"] else "?"
            source = (
                "option" if name in given else f"environment variable {ENV_PREFIX}{name.upper()}"
            )
            problems.append(f"{source} {name}: {item['msg']} (got {item.get('input')!r})")
        raise ConfigError("; ".join(problems)) from None


class ZooSettings(DecolaSettings):
    """``decola zoo``: where artefacts go and whether the network may be used."""

    directory: Path | None = Field(None, description="Store folder instead of <cache>/zoo.")
    force: bool = False

    def store(self) -> Path:
        from decola_core.zoo.resolve import zoo_store

        return self.directory.expanduser() if self.directory else zoo_store(self.cache_dir)


class EvalSettings(RecipeSettings):
    """``decola eval``: score a predictions file, or run a model over a dataset and score it."""

    predictions: Path | None = None
    annotations: Path | None = None
    images: Path | None = None
    eval_dataset: str | None = None
    weights: str | None = None
    conditioned: bool | None = None
    k: list[int] = Field(default_factory=list)
    max_dets: int | None = None
    per_class_cap: int = -1
    protocol: str = "standard"
    backend: str = "decola"
    num_gpus: int = 1
    output_dir: Path | None = None
    output: Path | None = None
    max_images: int | None = None
    max_bad_images: int = 0
    wandb: bool = False


class TrainSettings(RecipeSettings):
    """``decola train``."""

    weights: str | None = None
    pseudo_labels: str | None = None
    output_dir: Path | None = None
    max_iter: int | None = None
    checkpoint_period: int | None = None
    resume: bool = True
    num_gpus: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str | None = None
    num_workers: int | None = None
    max_bad_images: int = 100
    seed: int | None = None
    wandb: bool | None = None

    def resolve(self):
        """The recipe (with seed / W&B choices applied) and the job options for the core."""
        from decola_core.engine.run import TrainJob

        overrides = list(self.overrides)
        if self.seed is not None:
            overrides.append(f"seed={self.seed}")
        if self.wandb is not None:
            overrides.append(f"logging.wandb.enabled={str(self.wandb).lower()}")
        from decola_core.config.loader import load_recipe

        recipe = load_recipe(self.recipe_name(), overrides)
        return TrainJob(
            recipe=recipe,
            data_root=self.data_root,
            cache_dir=self.cache_dir,
            offline=self.offline,
            weights=self.weights,
            pseudo_labels=self.pseudo_labels,
            output_dir=self.output_dir or Path(recipe.resolved_output_dir()),
            max_iter=self.max_iter,
            checkpoint_period=self.checkpoint_period,
            resume=self.resume,
            num_workers=self.num_workers
            if self.num_workers is not None
            else recipe.data.num_workers,
            max_bad_images=self.max_bad_images,
        )


class SelfLabelSettings(RecipeSettings):
    """``decola self-label``."""

    weights: str
    output: Path
    min_sizes: list[int]
    label_dataset: str | None = None
    image_info: Path | None = None
    images: Path | None = None
    max_size: int = 667
    batch_size: int = 1
    shard_images: int = 2000
    num_gpus: int = 1
    max_bad_images: int = 100
    postprocess: bool = False

    def recipe_name(self) -> str:
        if self.config is None and self.phase is None and self.baseline is None:
            return "DECOLA_SELF_LABELING_Lbase_CLIP_R5021k_4x"
        return super().recipe_name()

    def job(self):
        from decola_core.data.catalog import DatasetCatalog
        from decola_core.data.toy import ensure_toy_dataset
        from decola_core.pseudo.self_label import SelfLabelJob
        from decola_core.zoo import resolve_weights

        recipe = self.load_recipe()
        if self.image_info is not None:
            if self.images is None:
                raise ConfigError("--image-info needs --images DIR")
            image_info, image_root = self.image_info, self.images
        else:
            name = self.label_dataset or (recipe.data.test[0] if recipe.data.test else None)
            if name is None:
                raise ConfigError("give --dataset NAME or --image-info FILE --images DIR")
            if name.startswith("toy"):
                ensure_toy_dataset(self.data_root)
            resolved = DatasetCatalog(self.data_root, recipe.data.datasets).get(name)
            image_info, image_root = resolved.annotations, resolved.image_root
        weights = resolve_weights(self.weights, self.cache_dir, offline=self.offline)
        return SelfLabelJob(
            recipe=recipe,
            weights=weights,
            image_info=image_info,
            image_root=image_root,
            output_dir=self.output,
            min_sizes=list(self.min_sizes),
            max_size=self.max_size,
            batch_size=self.batch_size,
            shard_images=self.shard_images,
            max_bad_images=self.max_bad_images,
            data_root=self.data_root,
        )


class PredictSettings(RecipeSettings):
    """``decola predict``: detect in image files and draw the results."""

    inputs: list[Path]
    weights: str
    output: Path = Path("predictions")
    classes: list[str] | None = None
    vocabulary: Literal["model", "lvis", "custom"] = "model"
    clip_weights: str | None = None
    clip_model: str | None = None
    template: str = "a {}"
    conditioned: bool | None = None
    threshold: float = Field(0.3, ge=0.0, le=1.0)
    max_dets: int = Field(100, gt=0)
    device: str = "cpu"

    def resolve_recipe(self, weights: Path) -> Recipe:
        """The recipe from ``--config``/shorthands, else the one the weights come with."""
        if any(v is not None for v in (self.config, self.phase, self.dataset, self.baseline)):
            return self.load_recipe()
        from decola_core.engine.predict import recipe_for_weights

        return recipe_for_weights(self.weights, weights, self.overrides)
