"""LVIS/COCO-format datasets read into compact per-image records (spec pipeline §1.3).

Class ids inside decola are contiguous 0-based indices of the sorted category ids. Crowd boxes
are dropped. Image paths follow the original loader: ``file_name`` (COCO-2014 style names cut to
their last 16 characters), else the last two parts of ``coco_url``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from decola_core.data.images import read_skip_list
from decola_core.errors import DatasetError
from decola_core.utils.io import read_json_file

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """One image: where it is, its stored size, its boxes (xywh), contiguous class ids, box
    scores (pseudo-labels; nan otherwise) and image-level labels."""

    image_id: int
    path: Path
    height: int
    width: int
    boxes: np.ndarray  # (n, 4) xywh in original pixels
    classes: np.ndarray  # (n,) contiguous ids
    image_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: per box its polygons (flat x, y arrays); None where the set has no masks or the image
    #: has no box (detectron2 gives such an image no ``gt_masks``)
    polygons: list[list[np.ndarray]] | None = None


class LvisDataset:
    """An LVIS-format annotation file as flat arrays, in ascending image-id order.

    Nothing per image or per box is kept as a Python object: boxes, classes and scores are
    concatenated arrays with per-image offsets, file names one byte string with offsets, so
    data-loader workers share the memory instead of copying millions of objects.
    ``drop_frequencies`` removes the boxes of categories with those LVIS frequency tags (e.g.
    ``{"r"}`` gives LVIS-base); ``min_score`` drops boxes scoring below it (pseudo-labels);
    ``drop_empty`` leaves out the images that have no box left. ``with_polygons`` keeps the
    polygon segmentations as flat coordinate arrays (used only if every box has one).
    Images in the skip list that ``decola data check`` wrote beside the file are left out.
    """

    def __init__(
        self,
        annotations: str | Path,
        image_root: str | Path,
        *,
        drop_frequencies: set[str] | frozenset[str] = frozenset(),
        min_score: float = 0.0,
        skip_unreadable: bool = True,
        drop_empty: bool = False,
        with_polygons: bool = False,
    ) -> None:
        path = Path(annotations)
        data = read_json_file(path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetError(f"{path}: not an LVIS/COCO file (no 'images' list)")
        self.source, self.image_root = path, Path(image_root)
        self.categories = sorted(data.get("categories", []), key=lambda c: c["id"])
        self.category_ids = np.array([c["id"] for c in self.categories], dtype=np.int64)
        contiguous = {int(c): i for i, c in enumerate(self.category_ids)}
        dropped = {c["id"] for c in self.categories if c.get("frequency") in drop_frequencies}
        skip = read_skip_list(path) if skip_unreadable else set()
        if skip:
            log.info("%s: leaving out %d unreadable image(s) of its skip list", path, len(skip))
        images = sorted((i for i in data["images"] if i["id"] not in skip), key=lambda i: i["id"])
        order = {img["id"]: n for n, img in enumerate(images)}
        anns = [
            a
            for a in data.get("annotations", [])
            if a.get("iscrowd", 0) == 0
            and a["category_id"] not in dropped
            and a["image_id"] not in skip
            and a.get("score", 1.0) >= min_score
        ]
        if drop_empty:  # detectron2's FILTER_EMPTY_ANNOTATIONS: images without a box go
            with_boxes = {a["image_id"] for a in anns}
            images = [img for img in images if img["id"] in with_boxes]
            order = {img["id"]: n for n, img in enumerate(images)}
        try:
            owner = np.array([order[a["image_id"]] for a in anns], dtype=np.int64)
            classes = np.array([contiguous[a["category_id"]] for a in anns], dtype=np.int64)
        except KeyError as err:
            raise DatasetError(
                f"{path}: an annotation names image or category {err} that is not listed"
            ) from None
        sort = np.argsort(owner, kind="stable")
        self._box_owner = owner[sort]
        self._boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)[sort]
        self._classes = classes[sort]
        self._scores = np.array([a.get("score", np.nan) for a in anns], dtype=np.float32)[sort]
        self._box_offsets = np.searchsorted(self._box_owner, np.arange(len(images) + 1))
        self.has_polygons = False
        if with_polygons:
            self._read_polygons([anns[i] for i in sort], path)
        self.image_ids = np.array([img["id"] for img in images], dtype=np.int64)
        self.heights = np.array([img["height"] for img in images], dtype=np.int32)
        self.widths = np.array([img["width"] for img in images], dtype=np.int32)
        labels = [
            [contiguous[c] for c in img.get("pos_category_ids", []) if c in contiguous]
            for img in images
        ]
        self._labels = np.array([c for row in labels for c in row], dtype=np.int64)
        self._label_offsets = np.cumsum([0] + [len(row) for row in labels])
        names = [_relative_path(img, path).encode() for img in images]
        self._names = b"".join(names)
        self._name_offsets = np.cumsum([0] + [len(n) for n in names])
        self.records = _Records(self)

    def _read_polygons(self, anns: list[dict], path: Path) -> None:
        """Every box's polygons as one coordinate array with polygon and box offsets."""
        with_polygon = sum(isinstance(a.get("segmentation"), list) for a in anns)
        if with_polygon < len(anns) or not anns:
            if with_polygon:
                log.warning(
                    "%s: %d of %d boxes have no polygon segmentation; masks are not trained "
                    "on this set",
                    path,
                    len(anns) - with_polygon,
                    len(anns),
                )
            return
        # fewer than 3 points bound no area (and 4 numbers would read as a box in pycocotools)
        polygons = [
            np.asarray(p, dtype=np.float64) for a in anns for p in a["segmentation"] if len(p) >= 6
        ]
        per_box = [sum(1 for p in a["segmentation"] if len(p) >= 6) for a in anns]
        self._poly_coords = np.concatenate(polygons) if polygons else np.zeros(0, np.float64)
        self._poly_offsets = np.cumsum([0] + [len(p) for p in polygons])
        self._box_poly_offsets = np.cumsum([0] + per_box)
        self.has_polygons = True

    def polygons(self, index: int) -> list[list[np.ndarray]] | None:
        """The polygons of image ``index``'s boxes (None: no masks for this image)."""
        lo, hi = self._box_offsets[index], self._box_offsets[index + 1]
        if not self.has_polygons or lo == hi:
            return None
        coords, at = self._poly_coords, self._poly_offsets
        return [
            [coords[at[p] : at[p + 1]] for p in range(start, stop)]
            for start, stop in zip(
                self._box_poly_offsets[lo:hi], self._box_poly_offsets[lo + 1 : hi + 1], strict=True
            )
        ]

    def __len__(self) -> int:
        return len(self.image_ids)

    def record(self, index: int) -> ImageRecord:
        lo, hi = self._box_offsets[index], self._box_offsets[index + 1]
        name = self._names[self._name_offsets[index] : self._name_offsets[index + 1]].decode()
        labels = self._labels[self._label_offsets[index] : self._label_offsets[index + 1]]
        return ImageRecord(
            int(self.image_ids[index]),
            self.image_root / name,
            int(self.heights[index]),
            int(self.widths[index]),
            self._boxes[lo:hi],
            self._classes[lo:hi],
            labels,
            self._scores[lo:hi],
            self.polygons(index),
        )

    def classes_per_image(self) -> list[np.ndarray]:
        return np.split(self._classes, self._box_offsets[1:-1])

    def labels_per_image(self) -> list[np.ndarray]:
        return np.split(self._labels, self._label_offsets[1:-1])

    def category_id(self, contiguous: np.ndarray | torch.Tensor) -> np.ndarray:
        """Dataset category ids of contiguous class ids."""
        return self.category_ids[np.asarray(contiguous, dtype=np.int64)]


class _Records:
    """``dataset.records[i]`` / slices / iteration, built on demand from the arrays."""

    def __init__(self, dataset: LvisDataset) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self._dataset.record(i) for i in range(*item.indices(len(self)))]
        if item < 0:
            item += len(self)
        return self._dataset.record(item)

    def __iter__(self):
        return (self._dataset.record(i) for i in range(len(self)))


def _relative_path(img: dict, source: Path) -> str:
    name = img.get("file_name")
    if name:
        return name[-16:] if name.startswith("COCO") else name
    url = img.get("coco_url")
    if url:
        return "/".join(url.split("/")[-2:])
    raise DatasetError(f"{source}: image {img.get('id')} has neither file_name nor coco_url")
