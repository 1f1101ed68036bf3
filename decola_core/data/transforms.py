"""Training augmentations on (uint8 image, xyxy boxes, polygons): resize, flip, crop, DETR's
multi-scale and the CenterNet2 recipes' EfficientDet resize-crop.

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

Polygons = list[list[np.ndarray]]  # per instance: its polygons as flat [x0, y0, x1, y1, ...]


@dataclass
class Sample:
    """An image being augmented with its xyxy boxes and (for mask training) polygons."""

    image: torch.Tensor  # (3, H, W) uint8
    boxes: np.ndarray  # (n, 4) xyxy float
    polygons: Polygons | None = None

    def mapped(
        self, image: torch.Tensor, scale: tuple[float, float], shift: tuple[float, float]
    ) -> Sample:
        """The new image with every coordinate mapped by ``x * sx - dx``, ``y * sy - dy``."""
        (sx, sy), (dx, dy) = scale, shift
        boxes = self.boxes * np.array([sx, sy, sx, sy]) - np.array([dx, dy, dx, dy])
        polygons = None
        if self.polygons is not None:
            polygons = [[_map_xy(p, sx, sy, dx, dy) for p in inst] for inst in self.polygons]
        return Sample(image, boxes, polygons)


def _map_xy(polygon: np.ndarray, sx: float, sy: float, dx: float, dy: float) -> np.ndarray:
    out = np.array(polygon, dtype=np.float64)
    out[0::2] = out[0::2] * sx - dx
    out[1::2] = out[1::2] * sy - dy
    return out


def pil_resize(image: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """A uint8 (3, H, W) image resized with PIL's bilinear filter (which antialiases when
    shrinking), as detectron2's ResizeTransform and EfficientDetResizeCrop do."""
    from PIL import Image

    pixels = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    resized = np.asarray(pixels.resize((new_w, new_h), Image.BILINEAR))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).to(image.device)


def _resize(sample: Sample, new_h: int, new_w: int) -> Sample:
    h, w = sample.image.shape[1:]
    if (new_h, new_w) == (h, w):
        return sample
    image = resize(sample.image, [new_h, new_w], antialias=True)
    return sample.mapped(image, (new_w / w, new_h / h), (0.0, 0.0))


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
        if self.sampling == "range":
            short = int(rng.integers(self.sizes[0], self.sizes[-1] + 1))
        else:
            short = int(self.sizes[int(rng.integers(len(self.sizes)))])
        h, w = sample.image.shape[1:]
        return _resize(sample, *shortest_edge_size(h, w, short, self.max_size))


@dataclass
class RandomFlip:
    """Flip the image, its xyxy boxes and its polygons with probability ``prob``, left-right
    (``horizontal``), upside down (``vertical``), or never (``none``)."""

    prob: float = 0.5
    direction: str = "horizontal"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.direction == "none" or rng.random() >= self.prob:
            return sample
        h, w = sample.image.shape[1:]
        if self.direction == "vertical":
            flipped = sample.mapped(sample.image.flip(-2), (1.0, -1.0), (0.0, -float(h)))
            flipped.boxes[:, [1, 3]] = flipped.boxes[:, [3, 1]]
            return flipped
        flipped = sample.mapped(sample.image.flip(-1), (-1.0, 1.0), (-float(w), 0.0))
        flipped.boxes[:, [0, 2]] = flipped.boxes[:, [2, 0]]
        return flipped


@dataclass
class RandomCropAbsoluteRange:
    """A crop with height and width drawn from [min, min(side, max)] at a random position."""

    min_size: int
    max_size: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.image.shape[1:]
        ch = int(rng.integers(min(h, self.min_size), min(h, self.max_size) + 1))
        cw = int(rng.integers(min(w, self.min_size), min(w, self.max_size) + 1))
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        cropped = sample.mapped(
            sample.image[:, y0 : y0 + ch, x0 : x0 + cw], (1.0, 1.0), (float(x0), float(y0))
        )
        cropped.boxes[:, [0, 2]] = cropped.boxes[:, [0, 2]].clip(0, cw)
        cropped.boxes[:, [1, 3]] = cropped.boxes[:, [1, 3]].clip(0, ch)
        return cropped


@dataclass
class EfficientDetResizeCrop:
    """The CenterNet2 recipes' augmentation (spec centernet2 §7.2): scale the image so that it
    fits a square of ``size * f`` (f uniform in ``scale``), then crop a random ``size`` x
    ``size`` window (smaller images stay smaller; the model pads)."""

    size: int
    scale: tuple[float, float] = (0.1, 2.0)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.image.shape[1:]
        target = rng.uniform(self.scale[0], self.scale[1]) * self.size
        k = min(target / h, target / w)
        sh, sw = max(1, int(h * k)), max(1, int(w * k))
        oy = int(max(0, sh - self.size) * rng.uniform(0, 1))
        ox = int(max(0, sw - self.size) * rng.uniform(0, 1))
        image = pil_resize(sample.image, sh, sw)[:, oy : oy + self.size, ox : ox + self.size]
        return sample.mapped(image, (k, k), (float(ox), float(oy)))


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
    if data_cfg.augmentation == "efficientdet_resize_crop":
        size, scale = data_cfg.train_size, data_cfg.scale_range
        if dataset_cfg is not None and dataset_cfg.input_size:
            size = dataset_cfg.input_size
        if dataset_cfg is not None and dataset_cfg.input_scale:
            scale = dataset_cfg.input_scale
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ConfigError(
                f"the resize-crop scale range must be [lo, hi] with 0 < lo <= hi "
                f"(got {list(scale)})"
            )
        steps = [EfficientDetResizeCrop(size, (float(scale[0]), float(scale[1])))]
        if data_cfg.random_flip != "none":
            steps.append(RandomFlip(direction=data_cfg.random_flip))
        return Compose(steps)
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


def filter_boxes(boxes: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image; returns the clipped boxes and which have a width and a height
    (detectron2's 1e-5 rule). Polygons are not clipped (as detectron2)."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    keep = ((clipped[:, 2] - clipped[:, 0]) > 1e-5) & ((clipped[:, 3] - clipped[:, 1]) > 1e-5)
    return clipped, keep
