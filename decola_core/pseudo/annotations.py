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
    """An LVIS-format file: its boxes as columns; images and categories kept as JSON text
    (parsed only when needed) with the image ids as an array."""

    boxes: BoxColumns
    images_json: bytes
    categories_json: bytes
    image_ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_parsed(
        cls,
        images: list[dict],
        categories: list[dict],
        boxes: BoxColumns,
        info: dict[str, Any] | None = None,
    ) -> PseudoFile:
        import orjson

        ids = np.fromiter((img["id"] for img in images), np.int64, len(images))
        return cls(boxes, orjson.dumps(images), orjson.dumps(categories), ids, info or {})

    @property
    def images(self) -> list[dict[str, Any]]:
        import orjson

        return orjson.loads(self.images_json)

    @property
    def categories(self) -> list[dict[str, Any]]:
        import orjson

        return orjson.loads(self.categories_json)

    def with_boxes(self, boxes: BoxColumns, info: dict[str, Any]) -> PseudoFile:
        return PseudoFile(boxes, self.images_json, self.categories_json, self.image_ids, info)

    @classmethod
    def load(cls, path: str | Path, source: int = 0) -> PseudoFile:
        """Read a file; files this module wrote are read from their columnar sidecar."""
        path = Path(path)
        cached = _read_sidecar(path)
        if cached is not None:
            return cached
        data = read_json_file(path, "pseudo-annotation file")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DecolaError(f"{path}: not an LVIS-format file (no 'images' list)")
        annotations = data.pop("annotations", [])
        boxes = BoxColumns.from_records(annotations, source, str(path))
        del annotations  # free the per-box dicts right away
        return cls.from_parsed(
            data["images"], data.get("categories", []), boxes, data.get("info", {})
        )

    def write(self, path: str | Path, *, protect: tuple[Path, ...] = ()) -> None:
        """Stream the file out atomically (ids 1..n in the current order), then its sidecar."""
        import orjson

        path = Path(path)
        with atomic_open(path, "wb", protect=protect) as out:
            out.write(b'{"info":' + orjson.dumps(self.info))
            out.write(b',"categories":' + self.categories_json)
            out.write(b',"images":' + self.images_json)
            out.write(b',"annotations":[')
            for i, chunk in enumerate(_annotation_chunks(self.boxes)):
                out.write((b"," if i else b"") + chunk)
            out.write(b"]}\n")
        _write_sidecar(path, self)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".decola.npz")


def _write_sidecar(path: Path, data: PseudoFile) -> None:
    """Columns and JSON parts beside ``path``, stamped with its size and mtime, so the next step
    of the chain does not parse the JSON again (a stale or missing sidecar is ignored)."""
    import orjson

    stat = path.stat()
    b = data.boxes
    with atomic_open(_sidecar(path), "wb") as handle:
        np.savez(
            handle,
            image_id=b.image_id,
            category_id=b.category_id,
            bbox=b.bbox,
            score=b.score,
            source=b.source,
            image_ids=data.image_ids,
            images_json=np.frombuffer(data.images_json, np.uint8),
            categories_json=np.frombuffer(data.categories_json, np.uint8),
            info_json=np.frombuffer(orjson.dumps(data.info), np.uint8),
            stamp=np.array([stat.st_size, stat.st_mtime_ns], np.int64),
        )


def _read_sidecar(path: Path) -> PseudoFile | None:
    import orjson

    sidecar = _sidecar(path)
    if not sidecar.is_file() or not path.is_file():
        return None
    try:
        with np.load(sidecar) as z:
            stat = path.stat()
            if z["stamp"].tolist() != [stat.st_size, stat.st_mtime_ns]:
                return None
            boxes = BoxColumns(z["image_id"], z["category_id"], z["bbox"], z["score"], z["source"])
            return PseudoFile(
                boxes,
                z["images_json"].tobytes(),
                z["categories_json"].tobytes(),
                z["image_ids"],
                orjson.loads(z["info_json"].tobytes()),
            )
    except (OSError, ValueError, KeyError):
        return None


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
