"""Training batches: datasets of a recipe, sampling, augmentation and worker processes.

The batch plan (which samples form which batch) is computed from the sampler state alone, so
the main process can save it in checkpoints while worker processes load the images of their
share of the batches (batch i goes to worker i mod workers; the loader returns batches in order).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from decola_core.config.schema import Recipe
from decola_core.data.catalog import DatasetCatalog
from decola_core.data.images import read_image
from decola_core.data.samplers import (
    BatchPlanner,
    TrainStream,
    multi_dataset_weights,
    repeat_factors,
)
from decola_core.data.transforms import Polygons, Sample, build_train_augmentation, filter_boxes
from decola_core.errors import ConfigError
from decola_core.structures.boxes import box_xyxy_to_cxcywh

log = logging.getLogger(__name__)


@dataclass
class TrainSample:
    image: torch.Tensor  # (3, H, W) uint8 after augmentation
    labels: torch.Tensor  # (n,) contiguous class ids
    boxes: torch.Tensor  # (n, 4) cxcywh normalised to the augmented image
    image_labels: torch.Tensor  # image-level labels (pos_category_ids)
    image_id: int
    polygons: Polygons | None = None  # per box, in augmented-image pixels (mask training)


@dataclass
class TrainBatch:
    source: int  # index of the dataset in recipe.data.train
    ann_type: str  # "box" or "image"
    samples: list[TrainSample] = field(default_factory=list)
    bad_images: list[str] = field(default_factory=list)

    def targets(self) -> list[dict[str, torch.Tensor]]:
        return [{"labels": s.labels, "boxes": s.boxes} for s in self.samples]

    def polygons(self) -> list[Polygons | None]:
        return [s.polygons for s in self.samples]


class TrainData:
    """The recipe's training sets, their sampling, and the batch planner of one rank."""

    def __init__(
        self,
        recipe: Recipe,
        data_root: Path,
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        with_polygons: bool = False,
    ) -> None:
        """``with_polygons``: read the box sets' polygon segmentations (for a mask head)."""
        catalog = DatasetCatalog(data_root, recipe.data.datasets)
        self.configs = recipe.data.train
        image_sets = [d.name for d in self.configs if d.ann_type == "image"]
        if image_sets and not recipe.model.with_image_labels:
            raise ConfigError(
                f"the recipe trains on image-labelled data ({', '.join(image_sets)}) but "
                "model.with_image_labels is false; set it to true"
            )
        drop_empty = recipe.data.filter_empty_annotations
        self.datasets = [
            catalog.open(
                d.name,
                min_score=d.score_threshold,
                drop_empty=drop_empty and d.ann_type == "box",
                with_polygons=with_polygons and d.ann_type == "box",
            )
            for d in self.configs
        ]
        self.ann_types = [d.ann_type for d in self.configs]
        self.augmentations = [
            build_train_augmentation(recipe.data, d if len(self.configs) > 1 else None)
            for d in self.configs
        ]
        sizes = [len(ds) for ds in self.datasets]
        self._starts = np.cumsum([0] + sizes)
        source_of = np.repeat(np.arange(len(sizes)), sizes)
        landscape = np.concatenate([ds.widths > ds.heights for ds in self.datasets])
        stream = self._stream(recipe, sizes, seed)
        batch_sizes = [
            d.batch_size or max(1, recipe.solver.ims_per_batch // world) for d in self.configs
        ]
        if len(self.configs) > 1 and not recipe.data.multi_dataset_grouping:
            raise ConfigError(
                "batches that mix training sets are not supported; set "
                "data.multi_dataset_grouping true (each batch from one set, as released)"
            )
        self.planner = BatchPlanner(
            stream,
            source_of,
            landscape,
            batch_sizes,
            rank,
            world,
            by_orientation=recipe.data.aspect_ratio_grouping,
        )
        self.seed, self.rank = seed, rank

    def _stream(self, recipe: Recipe, sizes: list[int], seed: int) -> TrainStream:
        total = sum(sizes)
        data = recipe.data
        if data.sampler == "multi_dataset":
            rfs = []
            for ds, cfg in zip(self.datasets, self.configs, strict=True):
                if cfg.use_rfs:
                    classes = (
                        ds.classes_per_image() if cfg.ann_type == "box" else ds.labels_per_image()
                    )
                    rfs.append(repeat_factors(classes, data.repeat_threshold))
                else:
                    rfs.append(None)
            weights = multi_dataset_weights(sizes, [d.ratio for d in self.configs], rfs)
            return TrainStream(total, seed, weights=weights)
        if data.sampler == "repeat_factor":
            return TrainStream(
                total,
                seed,
                repeat=repeat_factors(
                    [c for ds in self.datasets for c in ds.classes_per_image()],
                    data.repeat_threshold,
                ),
            )
        return TrainStream(total, seed)

    def describe(self) -> list[str]:
        sizes = self.planner.batch_sizes
        return [
            f"{cfg.name}: {len(ds):,} images ({cfg.ann_type}, {sizes[i]} per batch)"
            for i, (cfg, ds) in enumerate(zip(self.configs, self.datasets, strict=True))
        ]

    def record(self, index: int):
        """The record of global sample ``index``."""
        source = int(self.planner.source_of[index])
        return self.datasets[source].record(index - int(self._starts[source]))

    def load(self, position: int, index: int) -> TrainSample | None:
        """One augmented sample, or None if its image cannot be read."""
        source = int(self.planner.source_of[index])
        record = self.record(index)
        try:
            image = read_image(record.path)
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable image %s (%s)", record.path, err)
            return None
        h, w = image.shape[1:]
        if (h, w) == (record.width, record.height) and h != w:  # stored size is transposed (EXIF)
            record_h, record_w = w, h
        else:
            record_h, record_w = record.height, record.width
        if (h, w) != (record_h, record_w):
            log.warning(
                "skipping %s: decoded size %sx%s differs from the annotation %sx%s",
                record.path,
                w,
                h,
                record_w,
                record_h,
            )
            return None
        boxes = record.boxes.copy()
        boxes[:, 2:] += boxes[:, :2]
        rng = np.random.default_rng([self.seed, self.rank, position])
        sample = self.augmentations[source](Sample(image, boxes, record.polygons), rng)
        h, w = sample.image.shape[1:]
        boxes, keep = filter_boxes(sample.boxes, h, w)
        polygons = sample.polygons
        if polygons is not None:
            polygons = [p for p, kept in zip(polygons, keep, strict=True) if kept]
        scale = np.array([w, h, w, h], dtype=np.float64)
        norm = box_xyxy_to_cxcywh(torch.from_numpy(boxes[keep] / scale).float()).reshape(-1, 4)
        return TrainSample(
            sample.image.contiguous(),
            torch.from_numpy(record.classes[keep]).long(),
            norm,
            torch.from_numpy(record.image_labels).long(),
            record.image_id,
            polygons,
        )

    def batches(self, num_workers: int = 0) -> Iterator[TrainBatch]:
        """Batches in plan order, loaded by ``num_workers`` processes; the planner of this object
        follows along, so ``self.planner.state()`` always describes the next batch."""
        dataset = _BatchDataset(self, copy.deepcopy(self.planner))
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            persistent_workers=False,
            prefetch_factor=2 if num_workers else None,
        )
        plan = self.planner.batches()
        for batch in loader:
            next(plan)  # advance the saved state past this batch
            yield batch


class _BatchDataset(IterableDataset):
    def __init__(self, data: TrainData, planner: BatchPlanner) -> None:
        self.data, self.planner = data, planner

    def __iter__(self) -> Iterator[TrainBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for number, (source, items) in enumerate(self.planner.batches()):
            if number % workers != worker:
                continue
            batch = TrainBatch(source, self.data.ann_types[source])
            for position, index in items:
                sample = self.data.load(position, index)
                if sample is None:
                    batch.bad_images.append(str(self.data.record(index).path))
                else:
                    batch.samples.append(sample)
            yield batch
