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

from decola_core.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """One image: where it is, its stored size, its boxes (xywh) and contiguous class ids."""

    image_id: int
    path: Path
    height: int
    width: int
    boxes: np.ndarray  # (n, 4) xywh in original pixels
    classes: np.ndarray  # (n,) contiguous ids
    image_labels: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.int64)
    )  # pos_category_ids


class LvisDataset:
    """Records of an LVIS-format annotation file, in ascending image-id order."""

    def __init__(self, annotations: str | Path, image_root: str | Path) -> None:
        import orjson

        path = Path(annotations)
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise DatasetError(f"annotation file not found: {path}") from None
        except orjson.JSONDecodeError as err:
            raise DatasetError(f"{path}: invalid JSON ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetError(f"{path}: not an LVIS/COCO file (no 'images' list)")
        self.source = path
        self.categories = sorted(data.get("categories", []), key=lambda c: c["id"])
        self.category_ids = np.array([c["id"] for c in self.categories], dtype=np.int64)
        contiguous = {int(c): i for i, c in enumerate(self.category_ids)}
        grouped: dict[int, list[dict]] = {}
        for ann in data.get("annotations", []):
            if ann.get("iscrowd", 0) > 0:
                continue
            grouped.setdefault(ann["image_id"], []).append(ann)
        root = Path(image_root)
        self.records: list[ImageRecord] = []
        for img in sorted(data["images"], key=lambda i: i["id"]):
            anns = grouped.get(img["id"], [])
            try:
                classes = np.array([contiguous[a["category_id"]] for a in anns], dtype=np.int64)
                labels = np.array(
                    [contiguous[c] for c in img.get("pos_category_ids", [])], dtype=np.int64
                )
            except KeyError as err:
                raise DatasetError(
                    f"{path}: image {img['id']} names category {err} that is not in 'categories'"
                ) from None
            boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            self.records.append(
                ImageRecord(
                    int(img["id"]),
                    root / _relative_path(img, path),
                    int(img["height"]),
                    int(img["width"]),
                    boxes,
                    classes,
                    labels,
                )
            )

    def __len__(self) -> int:
        return len(self.records)

    def category_id(self, contiguous: np.ndarray | torch.Tensor) -> np.ndarray:
        """Dataset category ids of contiguous class ids."""
        return self.category_ids[np.asarray(contiguous, dtype=np.int64)]


def _relative_path(img: dict, source: Path) -> str:
    name = img.get("file_name")
    if name:
        return name[-16:] if name.startswith("COCO") else name
    url = img.get("coco_url")
    if url:
        return "/".join(url.split("/")[-2:])
    raise DatasetError(f"{source}: image {img.get('id')} has neither file_name nor coco_url")


def read_image(path: Path) -> torch.Tensor:
    """A (3, H, W) uint8 RGB tensor with EXIF orientation applied."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        array = np.asarray(image)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
