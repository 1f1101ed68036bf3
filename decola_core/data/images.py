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


#: Images whose header claims more pixels than this are refused before decoding (PIL's own
#: decompression-bomb limit; a 50 000 x 50 000 header would need 7.5 GB).
MAX_IMAGE_PIXELS = 2 * 89_478_485


class UnreadableImage(DatasetError, OSError):
    """An image file that cannot be decoded (also an ``OSError``: loaders skip and count it)."""


def read_image(path: Path) -> torch.Tensor:
    """A (3, H, W) uint8 RGB tensor with EXIF orientation applied; grayscale, CMYK, palette
    and 16-bit files are converted. Empty, truncated or oversized files raise
    :class:`UnreadableImage` naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # PIL on first use

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise UnreadableImage(
                    f"{path}: the header claims {width} x {height} px; refusing to decode it"
                )
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: keep the top 8 bits
                array = np.asarray(image, dtype=np.uint32) >> 8
                image = Image.fromarray(array.clip(0, 255).astype(np.uint8))
            array = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as err:  # PIL checks the header before we can
        raise UnreadableImage(f"{path}: {err}; refusing to decode it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        if isinstance(err, UnreadableImage):
            raise
        if isinstance(err, FileNotFoundError):
            raise UnreadableImage(f"{path}: no such image file") from None
        raise UnreadableImage(f"{path}: cannot decode the image ({err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
