"""``run_export(job)``: what ``decola export`` does around the exporter — the model and its
vocabulary resolved, the file exported and checked, the metadata recorded."""

from __future__ import annotations

import logging

import numpy as np
import torch

from decola_core.config.loader import load_recipe
from decola_core.data.toy import ensure_toy_data
from decola_core.engine.predict import recipe_for_weights, use_custom_vocabulary
from decola_core.errors import InputError
from decola_core.export.exporter import ExportSpec, check_spec, export_model, sha256_of
from decola_core.jobs import ExportJob
from decola_core.modeling.predictor import Predictor
from decola_core.modeling.resources import load_embeddings, resolve_path
from decola_core.zoo import resolve_weights

log = logging.getLogger(__name__)


def run_export(job: ExportJob) -> dict:
    """Export ``job.weights`` as the job says; returns the metadata written beside the file."""
    spec = ExportSpec(
        format=job.format,
        mode=job.mode,
        image_size=None if job.dynamic else tuple(job.image_size),
        opset=job.opset,
        with_preprocess=job.with_preprocess,
        embeddings_input=job.embeddings_input,
        tolerance=job.tolerance,
    )
    check_spec(spec)
    weights = resolve_weights(job.weights, job.cache_dir, offline=job.offline)
    recipe = (
        load_recipe(job.config, job.overrides)
        if job.config
        else recipe_for_weights(job.weights, weights, job.overrides)
    )
    ensure_toy_data(recipe, job.data_root)
    predictor = Predictor.from_recipe(
        recipe,
        weights,
        data_root=job.data_root,
        cache_dir=job.cache_dir,
        offline=job.offline,
        trusted=job.trust_weights,
        allow_embedding_mismatch=job.allow_embedding_mismatch,
    )
    vocabulary = _vocabulary(job, predictor, recipe)
    spec.max_detections = recipe.test.detections_per_image
    log.info(
        "exporting %s (%s, %s mode, %s) to %s",
        recipe.name,
        job.format,
        job.mode,
        "any image size" if spec.dynamic else f"{spec.image_size[0]}x{spec.image_size[1]}",
        job.output,
    )
    metadata = {
        "recipe": recipe.name,
        "weights": str(job.weights),
        "weights_sha256": sha256_of(weights),
        "vocabulary": vocabulary,
        "test": {
            "min_size": recipe.test.min_size,
            "max_size": recipe.test.max_size,
            "detections_per_image": recipe.test.detections_per_image,
            "score_threshold": recipe.test.score_threshold,
        },
    }
    _, meta = export_model(predictor.model, spec, job.output, metadata=metadata)
    parity = meta["parity"]
    log.info(
        "parity with PyTorch at %s: boxes max |diff| %.2e px, scores %.2e, top-k %s",
        ", ".join(f"{h}x{w}" for h, w in parity["image_sizes"]),
        parity["max_abs_diff_boxes"],
        parity["max_abs_diff_scores"],
        "match" if parity["topk_match"] else "differ",
    )
    return meta


def _vocabulary(job: ExportJob, predictor: Predictor, recipe) -> dict:
    """Apply the job's vocabulary to the predictor; returns its description (names and where
    the embeddings came from)."""
    names = list(predictor.class_names or [])
    source = {"kind": "recipe", "file": recipe.model.classifier.embeddings}
    if job.embeddings is not None:
        try:
            rows = np.load(job.embeddings)
        except (OSError, ValueError) as err:
            raise InputError(f"{job.embeddings}: not a readable .npy file ({err})") from None
        if rows.ndim != 2:
            raise InputError(f"{job.embeddings}: expected an (N, D) array, got {rows.shape}")
        names = job.classes or [f"class_{i}" for i in range(rows.shape[0])]
        if len(names) != rows.shape[0]:
            raise InputError(
                f"{job.embeddings}: {rows.shape[0]} rows but {len(names)} names in --classes"
            )
        predictor.use_vocabulary(names, torch.from_numpy(rows).float())
        source = {"kind": "file", "file": str(job.embeddings), "sha256": sha256_of(job.embeddings)}
    elif job.vocabulary == "custom":
        if not job.classes or not job.clip_weights:
            raise InputError("--vocabulary custom needs --classes NAMES and --clip-weights FILE")
        use_custom_vocabulary(
            predictor, job.classes, job.clip_weights, clip_model=job.clip_model,
            template=job.template, cache_dir=job.cache_dir, offline=job.offline,
        )  # fmt: skip
        names = list(job.classes)
        source = {"kind": "clip", "model": job.clip_model or "ViT-B-32-quickgelu",
                  "weights": str(job.clip_weights), "template": job.template}  # fmt: skip
    elif job.classes:  # a subset of the model's own vocabulary
        if job.mode != "object":
            raise InputError(
                "--classes with the model's vocabulary applies to object mode; a conditioned "
                "export takes the class ids as an input"
            )
        ids = predictor.class_ids(job.classes)
        c = recipe.model.classifier
        rows = load_embeddings(
            resolve_path(c.embeddings, job.data_root), c.num_classes, c.embed_dim, "embeddings"
        )[ids]
        predictor.use_vocabulary(list(job.classes), rows)
        names = list(job.classes)
        source = {**source, "subset": names}
    return {"names": names, "embeddings": source}
