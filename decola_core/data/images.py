"""Image files: reading them as tensors, their displayed size, and the skip lists of images
that ``decola data check`` found unreadable. A leaf that data readers and preparation share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from decola_core.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
SKIP_SUFFIX = ".skip.txt"


def skip_list_path(annotations: str | Path) -> Path:
    """Where ``decola data check`` lists the unreadable images of an annotation file."""
    annotations = Path(annotations)
    return annotations.with_name(annotations.name + SKIP_SUFFIX)


def read_skip_list(annotations: str | Path) -> set[int]:
    """Image ids listed as unreadable beside ``annotations`` (empty when there is no list)."""
    path = skip_list_path(annotations)
    if not path.is_file():
        return set()
    ids = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        field = line.split("\t", 1)[0].strip()
        if field and not field.startswith("#"):
            if not field.isdigit():
                raise DatasetError(f"{path}:{number}: expected an image id, got {field!r}")
            ids.add(int(field))
    return ids


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed, i.e. with the EXIF orientation applied."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def read_image(path: Path) -> torch.Tensor:
    """A (3, H, W) uint8 RGB tensor with EXIF orientation applied."""
    from PIL import Image, ImageOps  # PIL is imported on first use

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        array = np.asarray(image)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
