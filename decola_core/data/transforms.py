"""Training augmentations on (uint8 image, xyxy boxes): resize, flip, crop, DETR's multi-scale.

Every random choice comes from the ``numpy.random.Generator`` passed in, which the loader seeds
from the sample's position in the data stream, so a resumed run augments exactly like an
uninterrupted one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.functional import resize

from decola_core.config.schema import DataConfig, TrainDataset
from decola_core.errors import ConfigError

Sample = tuple[torch.Tensor, np.ndarray]  # image (3, H, W) uint8, boxes (n, 4) xyxy float


def _resize(image: torch.Tensor, boxes: np.ndarray, new_h: int, new_w: int) -> Sample:
    h, w = image.shape[1:]
    if (new_h, new_w) == (h, w):
        return image, boxes
    image = resize(image, [new_h, new_w], antialias=True)
    return image, boxes * np.array([new_w / w, new_h / h, new_w / w, new_h / h])


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge output size (its float arithmetic, round half up)."""
    scale = short / min(h, w)
    new_h, new_w = (short, scale * w) if h < w else (scale * h, short)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


@dataclass
class ResizeShortestEdge:
    sizes: list[int]
    max_size: int = 1333
    sampling: str = "choice"  # choice: one of sizes; range: uniform integer in [sizes[0], sizes[1]]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image, boxes = sample
        if self.sampling == "range":
            short = int(rng.integers(self.sizes[0], self.sizes[-1] + 1))
        else:
            short = int(self.sizes[int(rng.integers(len(self.sizes)))])
        return _resize(image, boxes, *shortest_edge_size(*image.shape[1:], short, self.max_size))


@dataclass
class RandomFlip:
    """Flip the image and its xyxy boxes with probability ``prob``, left-right
    (``horizontal``), upside down (``vertical``), or never (``none``)."""

    prob: float = 0.5
    direction: str = "horizontal"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image, boxes = sample
        if self.direction == "none" or rng.random() >= self.prob:
            return sample
        flipped = boxes.copy()
        if self.direction == "vertical":
            h = image.shape[1]
            flipped[:, 1], flipped[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
            return image.flip(-2), flipped
        w = image.shape[2]
        flipped[:, 0], flipped[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
        return image.flip(-1), flipped


@dataclass
class RandomCropAbsoluteRange:
    """A crop with height and width drawn from [min, min(side, max)] at a random position."""

    min_size: int
    max_size: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image, boxes = sample
        h, w = image.shape[1:]
        ch = int(rng.integers(min(h, self.min_size), min(h, self.max_size) + 1))
        cw = int(rng.integers(min(w, self.min_size), min(w, self.max_size) + 1))
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        shifted = boxes - np.array([x0, y0, x0, y0])
        shifted[:, [0, 2]] = shifted[:, [0, 2]].clip(0, cw)
        shifted[:, [1, 3]] = shifted[:, [1, 3]].clip(0, ch)
        return image[:, y0 : y0 + ch, x0 : x0 + cw], shifted


@dataclass
class DetrAugmentation:
    """Flip; then either a multi-scale resize, or resize + random crop + multi-scale resize."""

    min_sizes: list[int]
    max_size: int
    crop: tuple[int, int] | None = (384, 600)  # None: no crop branch (data.crop.enabled false)
    flip: str = "horizontal"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample = RandomFlip(direction=self.flip)(sample, rng)
        if self.crop is None or rng.random() < 0.5:
            return ResizeShortestEdge(self.min_sizes, self.max_size)(sample, rng)
        sample = ResizeShortestEdge([400, 500, 600], sys.maxsize)(sample, rng)
        sample = RandomCropAbsoluteRange(*self.crop)(sample, rng)
        return ResizeShortestEdge(self.min_sizes, self.max_size)(sample, rng)


@dataclass
class Compose:
    steps: list

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for step in self.steps:
            sample = step(sample, rng)
        return sample


def build_train_augmentation(
    data_cfg: DataConfig, dataset_cfg: TrainDataset | None = None
) -> Compose:
    """The augmentation of a recipe (per-dataset sizes override the global ones)."""
    sizes = (
        dataset_cfg.min_size
        if dataset_cfg is not None and dataset_cfg.min_size
        else data_cfg.min_size_train
    )
    max_size = (
        dataset_cfg.max_size
        if dataset_cfg is not None and dataset_cfg.max_size
        else data_cfg.max_size_train
    )
    if data_cfg.augmentation == "detr":  # data.crop belongs to DETR's augmentation only
        crop_cfg = data_cfg.crop
        if crop_cfg.enabled and crop_cfg.type != "absolute_range":
            raise ConfigError(
                f"data.crop.type '{crop_cfg.type}' is not supported with the detr augmentation "
                "(only absolute_range, as in the released recipes)"
            )
        crop = tuple(int(v) for v in crop_cfg.size) if crop_cfg.enabled else None
        return Compose([DetrAugmentation(list(sizes), max_size, crop, data_cfg.random_flip)])
    if data_cfg.augmentation in ("resize_shortest_edge", "default"):
        per_dataset = dataset_cfg is not None and dataset_cfg.min_size
        sampling = "range" if per_dataset and len(sizes) == 2 else data_cfg.min_size_train_sampling
        steps = [ResizeShortestEdge(list(sizes), max_size, sampling)]
        if data_cfg.random_flip != "none":
            steps.append(RandomFlip(direction=data_cfg.random_flip))
        return Compose(steps)
    raise ConfigError(
        f"data.augmentation '{data_cfg.augmentation}' is not supported for training yet"
    )


def filter_boxes(
    boxes: np.ndarray, classes: np.ndarray, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image and drop boxes with no width or height (detectron2's 1e-5 rule)."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    keep = ((clipped[:, 2] - clipped[:, 0]) > 1e-5) & ((clipped[:, 3] - clipped[:, 1]) > 1e-5)
    return clipped[keep], classes[keep]
