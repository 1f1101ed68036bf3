"""``decola self-label``: a frozen phase-1 model boxes each image-level label, at several test
sizes in one pass (spec §4.5), into resumable shards.

Each image is decoded once and labelled at every size back to back; with ``batch_size`` > 1,
images of one input shape and label count run together (see :mod:`decola_core.pseudo.buckets`),
so batching never pads and never changes a prediction.

Images are split into fixed chunks of ``shard_images``; chunk k belongs to rank k mod world and
becomes one shard per size, ``minsize_<s>/shard_<k>.jsonl``, written atomically once the whole
chunk is done. A rerun skips chunks whose shards all exist, so the result of an interrupted and
resumed run is byte-identical to an uninterrupted one. ``manifest.json`` records the weights
checksum, recipe, sizes, dataset, counts and finished shards.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from decola_core.data.catalog import DatasetCatalog
from decola_core.data.images import read_image
from decola_core.data.lvis import LvisDataset
from decola_core.data.toy import ensure_toy_data, ensure_toy_dataset, variant_of
from decola_core.engine.distributed import DistContext, barrier, init_distributed
from decola_core.errors import ConfigError, DecolaError
from decola_core.jobs import PseudoChainJob, SelfLabelJob
from decola_core.modeling import build_model, load_weights
from decola_core.modeling.predictor import resize_shortest_edge
from decola_core.modeling.resources import read_categories, resolve_path
from decola_core.pseudo.buckets import POOL_BATCHES, pseudo_label_in_buckets
from decola_core.pseudo.export import export_pseudo_labels
from decola_core.pseudo.postprocess import run_pseudo_chain
from decola_core.pseudo.tags import read_tags, tags_to_image_info
from decola_core.structures.boxes import box_cxcywh_to_xyxy
from decola_core.utils.io import atomic_open, atomic_write_text
from decola_core.utils.logs import log_file
from decola_core.utils.progress import progress_bar
from decola_core.zoo import resolve_weights, sha256_file

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
#: Images per forward pass on CUDA unless --batch-size says otherwise (CPU: the recipe's
#: test.batch_size, as batching gains little there: the forward pass dominates).
GPU_BATCH_SIZE = 8


@dataclass
class SelfLabelResult:
    """The run's manifest and, after ``postprocess``, the deduplicated pseudo-label file."""

    manifest: dict
    job: SelfLabelJob
    pseudo_labels: Path | None = None
    dedup: object | None = None
    exported: Path | None = None


def resolve_job(job: SelfLabelJob) -> SelfLabelJob:
    """The job with its data, weights file and sizes made concrete (the recipe's defaults)."""
    recipe = job.recipe
    min_sizes = list(job.min_sizes or recipe.self_label.min_sizes)
    if not min_sizes:
        raise DecolaError(
            "give at least one --min-sizes value (the recipe's self_label.min_sizes is empty)"
        )
    image_info, image_root = job.image_info, job.image_root
    output_dir = job.output_dir
    if output_dir is None:
        name = recipe.self_label.prediction_name or "self_label"
        output_dir = Path(recipe.resolved_output_dir()) / name
    if job.tags is not None:
        if image_root is None or image_info is not None or job.label_dataset is not None:
            raise ConfigError("--tags goes with --images DIR (and no --image-info/--label-dataset)")
        image_info = _image_info_from_tags(job, Path(output_dir))
    elif image_info is not None:
        if image_root is None:
            raise ConfigError("--image-info needs --images DIR")
    else:
        name = job.label_dataset or (recipe.data.test[0] if recipe.data.test else None)
        if name is None:
            raise ConfigError("give --label-dataset NAME or --image-info FILE --images DIR")
        if (variant := variant_of(name)) is not None:
            ensure_toy_dataset(job.data_root, variant)
        resolved = DatasetCatalog(job.data_root, recipe.data.datasets).get(name)
        image_info, image_root = resolved.annotations, resolved.image_root
    weights = resolve_weights(str(job.weights), job.cache_dir, offline=job.offline)
    return replace(
        job,
        output_dir=Path(output_dir),
        batch_size=job.batch_size
        or (GPU_BATCH_SIZE if torch.cuda.is_available() else recipe.test.batch_size),
        min_sizes=min_sizes,
        max_size=job.max_size or recipe.test.max_size,
        image_info=Path(image_info),
        image_root=Path(image_root),
        weights=weights,
    )


def shard_name(chunk: int) -> str:
    return f"shard_{chunk:05d}.jsonl"


def run_self_label(
    job: SelfLabelJob,
    context: DistContext | None = None,
    *,
    progress: bool = True,
) -> SelfLabelResult:
    """Label the dataset (and, with ``job.postprocess``, convert, merge and dedup on the main
    process), with a progress bar on the main process and ``log.txt`` in the output folder;
    the manifest on every rank."""
    context = context or init_distributed()
    job = resolve_job(job)
    with log_file(job.output_dir, enabled=context.is_main):
        return _run(job, context, progress)


def _run(job: SelfLabelJob, context: DistContext, progress: bool) -> SelfLabelResult:
    if context.is_main:
        log.info(
            "self-labelling %s with %s (%s) at min sizes %s (max %d), up to %d image(s) of "
            "one shape per pass -> %s",
            job.image_info,
            job.recipe.name,
            job.weights,
            job.min_sizes,
            job.max_size,
            job.batch_size,
            job.output_dir,
        )
    with progress_bar("img", disable=not (progress and context.is_main)) as bar:
        task = bar.add_task("self-label", total=None)
        manifest = _label(
            job,
            context,
            on_images=lambda n: bar.advance(task, n),
            on_start=lambda n: bar.update(task, total=n),
        )
    result = SelfLabelResult(manifest, job)
    if (job.postprocess or job.export is not None) and context.is_main:
        chain = run_pseudo_chain(
            PseudoChainJob(
                folder=job.output_dir,
                min_sizes=job.min_sizes,
                image_info=job.image_info,
                cache_dir=job.cache_dir,
            )
        )
        result.pseudo_labels, result.dedup = chain.output, chain.dedup
        if job.export is not None:
            name = "pseudo_labels_coco.json" if job.export == "coco" else "pseudo_labels_yolo"
            result.exported = export_pseudo_labels(chain.output, job.output_dir / name, job.export)
    return result


def _image_info_from_tags(job: SelfLabelJob, output_dir: Path) -> Path:
    """The image-info file of the tagged images, written into the output folder, with the
    model's categories (its category-info file)."""
    ensure_toy_data(job.recipe, job.data_root)  # a toy recipe's category file
    c = job.recipe.model.classifier
    categories = read_categories(resolve_path(c.category_info, job.data_root), c.num_classes)
    vocabulary = [{k: x[k] for k in ("id", "name", "frequency") if k in x} for x in categories]
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / "tags_image_info.json"
    tags_to_image_info(
        read_tags(job.tags), Path(job.image_root), vocabulary, target, source=job.tags
    )
    return target


def _label(job: SelfLabelJob, context: DistContext, on_images, on_start) -> dict:
    dataset = LvisDataset(job.image_info, job.image_root)
    settings = {
        "weights": str(job.weights),
        "weights_sha256": sha256_file(job.weights),
        "recipe": job.recipe.name,
        "image_info": str(job.image_info),
        "images": len(dataset),
        "min_sizes": list(job.min_sizes),
        "max_size": job.max_size,
        "batch_size": job.batch_size,
        "shard_images": job.shard_images,
        "pick": job.recipe.model.decola.pseudo_box_choice,
    }
    manifest_path = job.output_dir / MANIFEST
    if context.is_main:
        job.output_dir.mkdir(parents=True, exist_ok=True)
        if manifest_path.is_file():
            previous = json.loads(manifest_path.read_text())
            changed = [k for k, v in settings.items() if previous.get("settings", {}).get(k) != v]
            if changed:
                raise DecolaError(
                    f"{job.output_dir} holds a labelling run with other settings "
                    f"({', '.join(changed)}); use another --output-dir"
                )
        else:
            atomic_write_text(manifest_path, json.dumps({"settings": settings}, indent=2) + "\n")
        for size in job.min_sizes:
            (job.output_dir / f"minsize_{size}").mkdir(exist_ok=True)
    barrier()
    model = build_model(job.recipe, data_root=job.data_root)
    load_weights(
        model,
        job.weights,
        trusted=job.trust_weights,
        allow_embedding_mismatch=job.allow_embedding_mismatch,
    )
    model.to(context.device).eval()
    chunks = range(context.rank, -(-len(dataset) // job.shard_images), context.world_size)
    todo = [
        k
        for k in chunks
        if not all(
            (job.output_dir / f"minsize_{s}" / shard_name(k)).is_file() for s in job.min_sizes
        )
    ]
    if on_start is not None:
        on_start(sum(min(job.shard_images, len(dataset) - k * job.shard_images) for k in todo))
    bad = 0
    for chunk in todo:
        indices = range(chunk * job.shard_images, min((chunk + 1) * job.shard_images, len(dataset)))
        bad += _label_chunk(model, dataset, indices, chunk, job, context, on_images)
        if bad > job.max_bad_images:
            raise DecolaError(f"{bad} unreadable images; allow more with --max-bad-images")
    barrier()
    manifest = _finish_manifest(job, settings, dataset) if context.is_main else {}
    barrier()
    return manifest if context.is_main else json.loads(manifest_path.read_text())


@torch.no_grad()
def _label_chunk(
    model,
    dataset: LvisDataset,
    indices: range,
    chunk: int,
    job: SelfLabelJob,
    context: DistContext,
    on_images,
) -> int:
    import orjson

    lines: dict[int, list[bytes]] = {s: [] for s in job.min_sizes}
    bad = 0
    pool: list[tuple] = []  # decoded once, labelled at every size

    def flush() -> None:
        labels = [torch.as_tensor(lab, device=context.device) for _, _, lab in pool]
        for size in job.min_sizes:
            images = [
                resize_shortest_edge(img, size, job.max_size).to(context.device)
                for _, img, _ in pool
            ]
            picks = pseudo_label_in_buckets(
                model,
                images,
                labels,
                batch_size=job.batch_size,
                choice=job.recipe.model.decola.pseudo_box_choice,
                min_area=job.recipe.model.decola.pseudo_min_area,
            )
            for (record, _, _), pick in zip(pool, picks, strict=True):
                scale = torch.tensor([record.width, record.height] * 2, dtype=torch.float64)
                xyxy = box_cxcywh_to_xyxy(pick.boxes.double().cpu()) * scale
                for label, box, score in zip(
                    pick.labels.tolist(), xyxy.tolist(), pick.scores.tolist(), strict=True
                ):
                    lines[size].append(
                        orjson.dumps(
                            {
                                "image_id": record.image_id,
                                "category_id": int(dataset.category_ids[label]),
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "score": score,
                            }
                        )
                    )
        if on_images is not None:
            on_images(len(pool))
        pool.clear()

    for index in indices:
        record = dataset.record(index)
        if record.image_labels.size == 0:
            if on_images is not None:
                on_images(1)
            continue
        try:
            image = read_image(record.path)  # decoded once for every size
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable image %s (%s)", record.path, err)
            bad += 1
            continue
        pool.append((record, image, np.unique(record.image_labels)))
        if len(pool) == job.batch_size * POOL_BATCHES:
            flush()
    if pool:
        flush()
    for size in job.min_sizes:
        with atomic_open(job.output_dir / f"minsize_{size}" / shard_name(chunk), "wb") as handle:
            handle.write(b"".join(line + b"\n" for line in lines[size]))
    return bad


def _finish_manifest(job: SelfLabelJob, settings: dict, dataset: LvisDataset) -> dict:
    finished, counts = {}, {}
    for size in job.min_sizes:
        shards = sorted(p.name for p in (job.output_dir / f"minsize_{size}").glob("shard_*.jsonl"))
        finished[str(size)] = shards
        counts[str(size)] = sum(
            _count_lines(job.output_dir / f"minsize_{size}" / s) for s in shards
        )
    manifest = {
        "settings": settings,
        "finished_shards": finished,
        "boxes": counts,
        "images": len(dataset),
    }
    atomic_write_text(job.output_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())
