"""Fine-tuning on a user's own COCO/LVIS-format box set: everything a recipe needs to train on
it is derived from the set itself, so one ``decola train --train-json ... --train-images ...``
does what used to take a hand-written recipe.

From the training JSON decola derives

- the vocabulary: the categories' names in id order (ids need not be contiguous);
- class embeddings: the names through the CLIP text tower (``--clip-weights``; cached by
  encoder checksum, template and names) or the user's own ``--embeddings FILE.npy``;
- the category info with each class's image count, from which the federated loss draws;
- the evaluation protocol: LVIS when every category has a ``frequency`` tag, COCO otherwise;
- the schedule, from ``--epochs``.

The files go to ``<run>/vocabulary/`` and the resolved recipe to ``<run>/recipe.yaml``, so
``decola eval --config <run>/recipe.yaml`` and ``decola predict --weights <run>/model_final.pth``
work with the new vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from decola_core.config.schema import DatasetDeclaration, Recipe, TrainDataset
from decola_core.errors import ConfigError, DatasetError
from decola_core.text.embeddings import (
    DEFAULT_TEMPLATE,
    encoder_provenance,
    write_embedding_file,
)
from decola_core.text.encoder import DEFAULT_MODEL
from decola_core.utils.io import atomic_write_text, read_json_file

if TYPE_CHECKING:
    from decola_core.jobs import TrainJob

log = logging.getLogger(__name__)

TRAIN_SET, VAL_SET = "custom_train", "custom_val"
#: Small-data schedule with --epochs: the learning rate drops 10x at this share of the steps,
#: after a warm-up of this share (at most the recipe's own warm-up).
DECAY_AT, WARMUP_SHARE = 0.8, 0.05


@dataclass(kw_only=True)
class CustomData:
    """A user's box-labelled set and how to embed its class names."""

    train_json: Path
    train_images: Path
    val_json: Path | None = None
    val_images: Path | None = None
    embeddings: Path | None = None  # (num categories, dim) rows in the JSON's category-id order
    clip_weights: str | None = None  # a local CLIP file or zoo name, when no --embeddings
    clip_model: str = DEFAULT_MODEL
    template: str = DEFAULT_TEMPLATE
    epochs: float | None = None


def with_custom_data(job: TrainJob, data: CustomData) -> TrainJob:
    """``job`` retargeted at the user's set (:func:`prepare_custom_recipe`); its run folder is
    ``--output-dir`` or ``output/<train JSON stem>/<recipe name>``."""
    run_dir = job.output_dir or Path("output") / Path(data.train_json).stem / job.recipe.name
    recipe = prepare_custom_recipe(
        job.recipe, data, Path(run_dir), cache_dir=job.cache_dir, offline=job.offline
    )
    return dataclasses.replace(job, recipe=recipe, output_dir=Path(run_dir))


@dataclass(frozen=True)
class Vocabulary:
    """The classes of a set: categories in id order with their training image counts."""

    categories: list[dict]

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def has_frequencies(self) -> bool:
        return all(c.get("frequency") in ("r", "c", "f") for c in self.categories)


def read_vocabulary(path: Path) -> tuple[Vocabulary, int]:
    """The categories of a COCO/LVIS box file with the number of training images holding each
    (``image_count``), and the number of images. Errors name the file and the field."""
    data = read_json_file(path, "training annotation file")
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO/LVIS object with 'images' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: '{key}' must be a list (COCO/LVIS format)")
    categories = data["categories"]
    if not categories:
        raise DatasetError(f"{path}: 'categories' is empty")
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            raise DatasetError(f"{path}: categories[{i}] needs an integer 'id'")
        if not isinstance(c.get("name"), str) or not c["name"].strip():
            raise DatasetError(f"{path}: categories[{i}] (id {c['id']}) needs a non-empty 'name'")
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: category ids repeat")
    images_of: dict[int, set] = {i: set() for i in ids}
    for i, a in enumerate(data["annotations"]):
        try:
            images_of[a["category_id"]].add(a["image_id"])
        except (KeyError, TypeError):
            raise DatasetError(
                f"{path}: annotations[{i}] needs 'image_id' and a 'category_id' of 'categories'"
            ) from None
    ordered = sorted(categories, key=lambda c: c["id"])
    info = [
        {
            "id": c["id"],
            "name": c["name"],
            "image_count": len(images_of[c["id"]]),
            **({"frequency": c["frequency"]} if "frequency" in c else {}),
        }
        for c in ordered
    ]
    return Vocabulary(info), len(data["images"])


def prepare_custom_recipe(
    recipe: Recipe,
    data: CustomData,
    run_dir: Path,
    *,
    cache_dir: Path,
    offline: bool = False,
) -> Recipe:
    """``recipe`` retargeted at ``data``: its vocabulary files written under
    ``run_dir/vocabulary``, its data sets, class count, federated-loss size and (with epochs)
    schedule replaced. Writes ``run_dir/recipe.yaml``."""
    for what, path in (("--train-json", data.train_json), ("--val-json", data.val_json)):
        if path is not None and not Path(path).is_file():
            raise DatasetError(f"{what}: no such file: {path}")
    for what, path in (("--train-images", data.train_images), ("--val-images", data.val_images)):
        if path is not None and not Path(path).is_dir():
            raise DatasetError(f"{what}: no such folder: {path}")
    if (data.val_json is None) != (data.val_images is None):
        raise ConfigError("give --val-json and --val-images together")
    vocabulary, num_images = read_vocabulary(Path(data.train_json))
    if data.val_json is not None:
        _check_same_classes(vocabulary, Path(data.val_json), Path(data.train_json))
    folder = Path(run_dir) / "vocabulary"
    folder.mkdir(parents=True, exist_ok=True)
    info_path = folder / "category_info.json"
    atomic_write_text(info_path, json.dumps(vocabulary.categories, indent=1) + "\n")
    class_file, object_file = folder / "class_embeddings.npy", folder / "object_embedding.npy"
    dim = _write_class_embeddings(vocabulary, data, class_file, object_file, cache_dir, offline)

    evaluator = "lvis" if vocabulary.has_frequencies else "coco"
    datasets = {
        **recipe.data.datasets,
        TRAIN_SET: DatasetDeclaration(
            image_root=str(Path(data.train_images).resolve()),
            annotations=str(Path(data.train_json).resolve()),
            evaluator=evaluator,
        ),
    }
    test: list[str] = []
    if data.val_json is not None:
        datasets[VAL_SET] = DatasetDeclaration(
            image_root=str(Path(data.val_images).resolve()),
            annotations=str(Path(data.val_json).resolve()),
            evaluator=evaluator,
        )
        test = [VAL_SET]
    # the user's boxes replace the recipe's box sets; pseudo-labelled and image-labelled
    # sets (phase 2, Detic) need data the user has not given, so they go too
    train = [TrainDataset(name=TRAIN_SET)]
    num_classes = len(vocabulary.categories)
    classifier = recipe.model.classifier.model_copy(
        update={
            "num_classes": num_classes,
            "embeddings": str(class_file.resolve()),
            "object_embedding": str(object_file.resolve()),
            "category_info": str(info_path.resolve()),
            "embed_dim": dim,
        }
    )
    loss = recipe.model.loss.model_copy(
        update={"fed_loss_num_classes": min(recipe.model.loss.fed_loss_num_classes, num_classes)}
    )
    model = recipe.model.model_copy(update={"classifier": classifier, "loss": loss})
    updates = {
        "model": model,
        "data": recipe.data.model_copy(update={"train": train, "test": test, "datasets": datasets}),
        "output_dir": str(Path(run_dir)),
    }
    if data.epochs is not None:
        updates["solver"] = epoch_schedule(recipe, data.epochs, num_images)
    custom = recipe.model_copy(update=updates)
    from decola_core.config.loader import dump_recipe

    atomic_write_text(Path(run_dir) / "recipe.yaml", dump_recipe(custom))
    log.info(
        "custom data: %d classes (%s protocol), %d training images, embeddings %s (%d-d)",
        num_classes,
        evaluator.upper(),
        num_images,
        class_file,
        dim,
    )
    return custom


def epoch_schedule(recipe: Recipe, epochs: float, num_images: int):
    """The recipe's solver with ``epochs`` passes over ``num_images``: max_iter =
    ceil(epochs * images / batch); one 10x decay at 80 %; warm-up at most 5 % of the steps."""
    if epochs <= 0:
        raise ConfigError(f"--epochs must be positive (got {epochs})")
    solver = recipe.solver
    max_iter = max(2, math.ceil(epochs * num_images / solver.ims_per_batch))
    return solver.model_copy(
        update={
            "max_iter": max_iter,
            "train_iter": 0,
            "steps": [max(1, int(max_iter * DECAY_AT))] if max_iter > 2 else [],
            "warmup_iters": min(solver.warmup_iters, int(max_iter * WARMUP_SHARE)),
            "checkpoint_period": min(solver.checkpoint_period, max(1, max_iter // 4)),
        }
    )


def _check_same_classes(vocabulary: Vocabulary, val_json: Path, train_json: Path) -> None:
    val, _ = read_vocabulary(val_json)
    if [(c["id"], c["name"]) for c in val.categories] != [
        (c["id"], c["name"]) for c in vocabulary.categories
    ]:
        raise DatasetError(
            f"{val_json}: its categories (ids and names) differ from {train_json}'s; both "
            "files need the same category list"
        )


def _write_class_embeddings(
    vocabulary: Vocabulary,
    data: CustomData,
    class_file: Path,
    object_file: Path,
    cache_dir: Path,
    offline: bool,
) -> int:
    """Write the class rows and the "a object" row; returns the embedding dimension."""
    names = vocabulary.names
    if data.embeddings is not None:
        array = _user_embeddings(Path(data.embeddings), len(names))
        # no text encoder to embed "object" with: its row is the mean direction of the classes,
        # at their mean length (used only in object mode, i.e. phase 2 and the baselines)
        unit = array / np.linalg.norm(array, axis=1, keepdims=True).clip(1e-12)
        mean = unit.mean(0)
        obj = mean / max(np.linalg.norm(mean), 1e-12) * np.linalg.norm(array, axis=1).mean()
        provenance = {"encoder": "user", "source": str(Path(data.embeddings).resolve())}
        write_embedding_file(class_file, array, provenance={**provenance, "names": names})
        write_embedding_file(object_file, obj[None].astype(np.float32), provenance=provenance)
        return array.shape[1]
    if data.clip_weights is None:
        raise ConfigError(
            "custom data needs class embeddings: give --clip-weights FILE (CLIP's text tower "
            "embeds the category names) or --embeddings FILE.npy (one row per category, in "
            "category-id order)"
        )
    from decola_core.text.embeddings import vocabulary_embeddings
    from decola_core.zoo import resolve_weights, sha256_file

    weights = resolve_weights(data.clip_weights, Path(cache_dir).expanduser(), offline=offline)
    checksum = sha256_file(Path(weights))  # once: the cache key and the provenance
    rows, hit = vocabulary_embeddings(
        [*names, "object"], weights, model=data.clip_model, template=data.template,
        cache_dir=cache_dir, weights_sha256=checksum,
    )  # fmt: skip
    array, obj = rows[:-1], rows[-1:]
    log.info(
        "class embeddings of %d names: %s", len(names), "cached" if hit else "encoded with CLIP"
    )
    provenance = encoder_provenance(data.clip_model, checksum, data.template)
    write_embedding_file(class_file, array, provenance={**provenance, "names": names})
    write_embedding_file(object_file, obj, provenance={**provenance, "names": ["object"]})
    return array.shape[1]


def _user_embeddings(path: Path, rows: int) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(f"--embeddings: no such file: {path}")
    try:
        array = np.load(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--embeddings {path}: not a readable .npy file ({err})") from None
    if array.ndim != 2 or array.shape[0] != rows:
        raise ConfigError(
            f"--embeddings {path}: shape {array.shape}, expected ({rows}, dim): one row per "
            "category of the training JSON, in category-id order"
        )
    return array.astype(np.float32)
