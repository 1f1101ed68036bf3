"""Pseudo-annotation files as columns: read an LVIS-format file's boxes into arrays and write
one back by streaming, never holding a Python dict per box."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decola_core.errors import DecolaError
from decola_core.utils.io import atomic_open, read_json_file


@dataclass
class BoxColumns:
    """n boxes: image ids, category ids, xywh boxes, scores and the index of their input."""

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    source: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.image_id.shape[0])

    def select(self, index: np.ndarray) -> BoxColumns:
        return BoxColumns(
            self.image_id[index],
            self.category_id[index],
            self.bbox[index],
            self.score[index],
            self.source[index],
        )

    @classmethod
    def concat(cls, parts: list[BoxColumns]) -> BoxColumns:
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("image_id", "category_id", "bbox", "score", "source")
            )
        )

    @classmethod
    def from_records(
        cls, records: list[dict[str, Any]], source: int = 0, what: str = "input"
    ) -> BoxColumns:
        n = len(records)
        try:
            image_id = np.fromiter((r["image_id"] for r in records), np.int64, n)
            category_id = np.fromiter((r["category_id"] for r in records), np.int64, n)
            score = np.fromiter((r.get("score", 1.0) for r in records), np.float64, n)
            bbox = np.array([r["bbox"] for r in records], dtype=np.float64).reshape(n, 4)
        except (KeyError, TypeError, ValueError) as err:
            raise DecolaError(
                f"{what}: every box needs image_id, category_id and bbox [x, y, w, h] "
                f"({type(err).__name__}: {err})"
            ) from None
        if "source" in (records[0] if records else {}):
            src = np.fromiter((r.get("source", source) for r in records), np.int64, n)
        else:
            src = np.full(n, source, np.int64)
        return cls(image_id, category_id, bbox, score, src)


@dataclass
class PseudoFile:
    """An LVIS-format file: its images and categories (as parsed) and its boxes (as columns)."""

    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    boxes: BoxColumns
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, source: int = 0) -> PseudoFile:
        data = read_json_file(path, "pseudo-annotation file")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DecolaError(f"{path}: not an LVIS-format file (no 'images' list)")
        annotations = data.get("annotations", [])
        boxes = BoxColumns.from_records(annotations, source, str(path))
        del annotations, data["annotations"]  # free the per-box dicts right away
        return cls(data["images"], data.get("categories", []), boxes, data.get("info", {}))

    def write(self, path: str | Path, *, protect: tuple[Path, ...] = ()) -> None:
        """Stream the file out atomically; ids are 1..n in the current order."""
        import orjson

        with atomic_open(path, "wb", protect=protect) as out:
            out.write(b'{"info":' + orjson.dumps(self.info))
            out.write(b',"categories":' + orjson.dumps(self.categories))
            out.write(b',"images":' + orjson.dumps(self.images))
            out.write(b',"annotations":[')
            for i, chunk in enumerate(_annotation_chunks(self.boxes)):
                out.write((b"," if i else b"") + chunk)
            out.write(b"]}\n")


def _annotation_chunks(boxes: BoxColumns, size: int = 200_000) -> Iterator[bytes]:
    import orjson

    area = boxes.bbox[:, 2] * boxes.bbox[:, 3]
    for start in range(0, len(boxes), size):
        stop = min(start + size, len(boxes))
        columns = zip(
            range(start + 1, stop + 1),
            boxes.image_id[start:stop].tolist(),
            boxes.category_id[start:stop].tolist(),
            boxes.bbox[start:stop].tolist(),
            area[start:stop].tolist(),
            boxes.score[start:stop].tolist(),
            boxes.source[start:stop].tolist(),
            strict=True,
        )
        records = [
            {
                "id": i,
                "image_id": img,
                "category_id": cat,
                "bbox": box,
                "area": a,
                "score": sc,
                "source": src,
            }
            for i, img, cat, box, a, sc, src in columns
        ]
        yield orjson.dumps(records)[1:-1]


def check_ids(boxes: BoxColumns, images: list[dict], categories: list[dict], what: str) -> None:
    """Every box names a known image and category."""
    image_ids = np.fromiter((img["id"] for img in images), np.int64, len(images))
    category_ids = np.fromiter((c["id"] for c in categories), np.int64, len(categories))
    unknown_images = np.setdiff1d(np.unique(boxes.image_id), image_ids)
    if unknown_images.size:
        raise DecolaError(
            f"{what}: {unknown_images.size} image ids are not in the image info "
            f"(e.g. {unknown_images[:5].tolist()})"
        )
    unknown_cats = np.setdiff1d(np.unique(boxes.category_id), category_ids)
    if unknown_cats.size:
        raise DecolaError(
            f"{what}: category ids not in the image info: {unknown_cats[:10].tolist()}"
        )
    if not np.isfinite(boxes.bbox).all() or (boxes.bbox[:, 2:] < 0).any():
        raise DecolaError(f"{what}: boxes must be finite [x, y, w, h] with w, h >= 0")
