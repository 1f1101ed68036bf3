"""The job objects of the core's job functions — what one ``decola`` command asks for, with
every default stated once, here. Light on purpose (no torch), so the CLI can build its options
and ``--help`` from them without importing the heavy modules that run the jobs:

=====================  ===============================================  =========================
job                    run by                                           command
=====================  ===============================================  =========================
:class:`TrainJob`      :func:`decola_core.engine.run.run_training`      ``decola train``
:class:`EvalJob`       :func:`decola_core.evaluation.job.run_evaluation`  ``decola eval``
:class:`SelfLabelJob`  :func:`decola_core.pseudo.self_label.run_self_label`  ``decola self-label``
:class:`PseudoChainJob`  :func:`decola_core.pseudo.postprocess.run_pseudo_chain`  ``--postprocess``
:class:`PredictJob`    :func:`decola_core.engine.predict.run_predict`   ``decola predict``
:class:`LaunchOptions` :func:`decola_core.engine.launch.launch`         ``--num-gpus`` ...
=====================  ===============================================  =========================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: this module stays light for the CLI
    from decola_core.config.schema import Recipe

DATA_ROOT = Path("datasets")
CACHE_DIR = Path("~/.cache/decola")


@dataclass(kw_only=True)
class LaunchOptions:
    """Processes of a job: ``num_gpus`` per machine, ``num_machines`` machines, this machine's
    rank and ``dist_url`` (host:port of machine 0) for manual multi-node runs."""

    num_gpus: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str | None = None
    max_restarts: int = 0


@dataclass(kw_only=True)
class TrainOptions:
    """How to run the training loop (the recipe says what to train)."""

    output_dir: Path
    data_root: Path = DATA_ROOT
    max_iter: int | None = None  # None: the recipe's solver.train_iter or max_iter
    checkpoint_period: int | None = None  # None: the recipe's solver.checkpoint_period
    resume: bool = True
    num_workers: int | None = None  # None: the recipe's data.num_workers
    max_bad_images: int = 100
    keep_checkpoints: int = 3
    init_weights: Path | None = None
    teacher_weights: Path | None = None
    trust_weights: bool = False  # allow pickled weights (.pkl): they can run code when loaded
    allow_embedding_mismatch: bool = False  # weights trained with another encoder's embeddings


@dataclass(kw_only=True)
class TrainJob(TrainOptions):
    """``decola train``: the recipe, where its files are, and how to run the loop
    (:class:`TrainOptions`); ``output_dir`` None means the recipe's ``output_dir``."""

    recipe: Recipe
    output_dir: Path | None = None
    cache_dir: Path = CACHE_DIR
    offline: bool = False
    weights: str | None = None  # initial weights; phase 2 online: the phase-1 teacher's
    pseudo_labels: str | None = None  # phase 2 offline: a pseudo-label file or catalog set

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or self.recipe.resolved_output_dir())


@dataclass(kw_only=True)
class EvalJob:
    """``decola eval``: score ``predictions`` against ``annotations``, or run ``weights`` of
    ``recipe`` over ``eval_dataset`` (default: the recipe's test set) or ``annotations`` with
    ``images``, and score the result."""

    predictions: Path | None = None
    annotations: Path | None = None
    images: Path | None = None
    recipe: Recipe | None = None
    weights: str | None = None
    eval_dataset: str | None = None
    conditioned: bool | None = None  # None: the recipe's test.oracle
    k: list[int] = field(default_factory=list)  # c-mAP budgets; empty: max_dets
    max_dets: int | None = None  # None: the recipe's test.detections_per_image
    per_class_cap: int | None = None  # None: the recipe's (-1: no cap; scoring a file: -1)
    protocol: str = "standard"  # standard | fixed | coco
    backend: str = "decola"  # decola | faster-coco-eval | lvis-api
    output_dir: Path | None = None  # None: <recipe output>/eval_<dataset>
    output: Path | None = None  # metrics.json of a scored file (default: beside it)
    max_images: int | None = None
    max_bad_images: int = 0
    wandb: bool = False
    trust_weights: bool = False
    allow_embedding_mismatch: bool = False
    data_root: Path = DATA_ROOT
    cache_dir: Path = CACHE_DIR
    offline: bool = False


@dataclass(kw_only=True)
class SelfLabelJob:
    """``decola self-label``: label ``label_dataset`` (a catalog set, default the recipe's test
    set), ``image_info`` + ``image_root``, or the images of a ``tags`` file (image file -> class
    names) under ``image_root``, with the phase-1 ``weights`` (a path or zoo name) at
    each of ``min_sizes`` (default: the recipe's ``self_label.min_sizes``) with the long side at
    most ``max_size`` (default: the recipe's ``test.max_size``), into ``output_dir``."""

    recipe: Recipe
    weights: str | Path
    output_dir: Path | None = None  # None: <recipe output_dir>/<self_label.prediction_name>
    min_sizes: list[int] | None = None
    max_size: int | None = None
    label_dataset: str | None = None
    image_info: Path | None = None
    image_root: Path | None = None
    tags: Path | None = None  # image file -> class names (CSV or JSON), with image_root
    export: Literal["coco", "yolo"] | None = None  # the deduplicated boxes (implies postprocess)
    batch_size: int | None = None  # None: 8 on CUDA, else the recipe's test.batch_size
    shard_images: int = 2000
    max_bad_images: int = 100
    postprocess: bool = False  # then convert, merge and dedup (run_pseudo_chain)
    trust_weights: bool = False
    allow_embedding_mismatch: bool = False
    data_root: Path = DATA_ROOT
    cache_dir: Path = CACHE_DIR
    offline: bool = False


@dataclass(kw_only=True)
class PseudoChainJob:
    """The pseudo-label chain of a labelling run in ``folder``: ``minsize_<s>`` shards ->
    ``pseudo_minsize_<s>.json`` each (convert) -> ``pseudo_merged.json`` (merge) ->
    ``pseudo_labels.json`` (dedup)."""

    folder: Path
    min_sizes: list[int]
    image_info: Path
    min_score: float = 0.0
    skip_invalid: bool = False  # drop (and count) boxes with NaN or negative size
    iou_threshold: float = 0.9
    class_aware: bool = True
    cache_dir: Path | None = None


@dataclass(kw_only=True)
class PredictJob:
    """``decola predict``: which images, where to, and which classes: prompted (class mode)
    when ``conditioned``, else object mode with the output restricted to them."""

    images: list[Path]
    output_dir: Path = Path("predictions")
    classes: list[str] | None = None
    conditioned: bool = True
    threshold: float = 0.3
    max_detections: int = 100


@dataclass(kw_only=True)
class ExportJob:
    """``decola export``: which model, to which format and file, with which inputs and
    vocabulary; ``config`` None means the recipe the weights record (zoo or decola train)."""

    weights: str
    output: Path
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    format: str = "onnx"
    mode: str = "object"
    image_size: tuple[int, int] = (800, 1333)
    dynamic: bool = False
    opset: int = 18
    with_preprocess: bool = False
    embeddings_input: bool = False
    vocabulary: str = "model"
    classes: list[str] | None = None
    embeddings: Path | None = None
    clip_weights: str | None = None
    clip_model: str | None = None
    template: str = "a {}"
    tolerance: float = 1e-4
    data_root: Path = DATA_ROOT
    cache_dir: Path = CACHE_DIR
    offline: bool = False
    trust_weights: bool = False
    allow_embedding_mismatch: bool = False
