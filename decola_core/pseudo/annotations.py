"""Pseudo-annotation files as columns: read an LVIS-format file's boxes into arrays and write
one back by streaming, never holding a Python dict per box."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decola_core.errors import DecolaError
from decola_core.pseudo.columns import BoxColumns
from decola_core.pseudo.records import copy_records, write_formatted
from decola_core.utils.io import atomic_open, read_json_file
from decola_core.utils.memory import gc_paused

log = logging.getLogger(__name__)


@dataclass
class PseudoFile:
    """An LVIS-format file: its boxes as columns; images and categories kept as JSON text
    (parsed only when needed) with the image ids as an array."""

    boxes: BoxColumns
    images_json: bytes
    categories_json: bytes
    image_ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    # set when read through a sidecar: the JSON file and the byte span of every record in it,
    # so a subset (dedup) is written by copying the records' text instead of formatting it
    records_in: tuple[Path, np.ndarray] | None = None

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

    def subset(self, keep: np.ndarray, info: dict[str, Any]) -> PseudoFile:
        """The boxes at the sorted indices ``keep``, keeping their record ids."""
        records_in = None
        if self.records_in is not None:
            records_in = (self.records_in[0], self.records_in[1][keep])
        subset = self.with_boxes(self.boxes.numbered().select(keep), info)
        subset.records_in = records_in
        return subset

    @property
    def category_ids(self) -> np.ndarray:
        return np.array([c["id"] for c in self.categories], np.int64)

    @classmethod
    @gc_paused()
    def load(
        cls,
        path: str | Path,
        source: int = 0,
        *,
        cache_dir: str | Path | None = None,
        what: str = "pseudo-annotation file",
    ) -> PseudoFile:
        """Read an LVIS-format file, from its columnar sidecar when one is up to date.

        Files this module wrote have their sidecar beside them. For other files (an image-info
        file converted once per size) a sidecar is kept under ``cache_dir`` when one is given.
        """
        path = Path(path)
        sidecar = _cached_sidecar(path, cache_dir) if cache_dir is not None else _sidecar(path)
        cached = _read_sidecar(path, sidecar)
        if cached is not None:
            return cached
        data = read_json_file(path, what)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DecolaError(f"{path}: not an LVIS-format file (no 'images' list)")
        annotations = data.pop("annotations", [])
        boxes = BoxColumns.from_records(annotations, source, str(path))
        del annotations  # free the per-box dicts right away
        loaded = cls.from_parsed(
            data["images"], data.get("categories", []), boxes, data.get("info", {})
        )
        if cache_dir is not None:
            try:
                _write_sidecar(path, loaded, sidecar)
            except (OSError, DecolaError) as err:  # the cache only saves time: go without it
                log.warning("could not cache %s in %s (%s)", path, sidecar.parent, err)
        return loaded

    @gc_paused()
    def write(
        self, path: str | Path, *, protect: tuple[Path, ...] = (), sidecar: bool = True
    ) -> None:
        """Stream the file out atomically, then (unless ``sidecar`` is False) its sidecar.

        Records keep their ids, or are numbered 1..n in the current order when they have none.
        A subset of a file read through its sidecar is copied verbatim from that file (the same
        bytes as formatting it).
        """
        import orjson

        path = Path(path)
        head = b'{"info":' + orjson.dumps(self.info) + b',"categories":'
        images_at = len(head) + len(self.categories_json) + len(b',"images":')
        records_at = images_at + len(self.images_json) + len(b',"annotations":[')
        with atomic_open(path, "wb", protect=protect) as out:
            for part in (head, self.categories_json, b',"images":', self.images_json):
                out.write(part)
            out.write(b',"annotations":[')
            if self.records_in is not None:
                lengths = copy_records(out, *self.records_in)
            else:
                lengths = write_formatted(out, self.boxes)
            out.write(b"]}\n")
        if sidecar:
            parts_at = (len(head), len(self.categories_json), images_at, len(self.images_json))
            _write_sidecar(path, self, _sidecar(path), (*parts_at, records_at), lengths)
        else:
            _sidecar(path).unlink(missing_ok=True)  # one left from an earlier file is stale


SIDECAR_VERSION = 7
_SIDECAR_FIELDS = (
    "json_spans",
    "record_lengths",
    "record_ids",
    "image_id",
    "category_id",
    "bbox",
    "score",
    "source",
    "image_ids",
    "categories_json",
    "images_json",
    "info_json",
)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".decola.npy")


def _cached_sidecar(path: Path, cache_dir: str | Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:20]
    return Path(cache_dir).expanduser() / "lvis-columns" / f"{path.stem[:40]}-{key}.npy"


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [SIDECAR_VERSION, stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _write_sidecar(
    path: Path,
    data: PseudoFile,
    sidecar: Path,
    json_spans: tuple[int, ...] | None = None,
    record_lengths: np.ndarray | None = None,
) -> None:
    """The columns and JSON parts of ``path``, stamped with its size, mtime and inode, so the
    next step of the chain does not parse the JSON again (a stale or missing sidecar is
    ignored). The arrays are stored back to back as .npy records: no zip, no checksums.

    ``json_spans`` (offset and length of the categories, then of the images, then where the
    records start) says where those parts lie in ``path`` itself, so a file this module wrote
    does not store them twice; ``record_lengths`` are the byte lengths of its records.
    """
    import orjson

    b = data.boxes
    parts = (b"", b"") if json_spans else (data.categories_json, data.images_json)
    lengths = np.zeros(0) if record_lengths is None else record_lengths
    arrays = (
        np.array(_stamp(path), np.int64),
        np.array(json_spans or (), np.int64),
        lengths.astype(np.int32),
        np.zeros(0, np.int64) if b.record_id is None else b.record_id,
        _narrow(b.image_id),
        _narrow(b.category_id),
        b.bbox,
        b.score,
        _narrow(b.source),
        data.image_ids,
        *(np.frombuffer(text, np.uint8) for text in (*parts, orjson.dumps(data.info))),
    )
    with atomic_open(sidecar, "wb") as handle:
        for array in arrays:
            np.save(handle, array, allow_pickle=False)


def _narrow(ids: np.ndarray) -> np.ndarray:
    """Integer ids as int32 when they fit (read back as int64): a smaller sidecar to write."""
    fits = not len(ids) or (ids.min() >= -(2**31) and ids.max() < 2**31)
    return ids.astype(np.int32) if fits else ids


def _read_sidecar(path: Path, sidecar: Path) -> PseudoFile | None:
    import orjson

    if not sidecar.is_file() or not path.is_file():
        return None
    try:
        with open(sidecar, "rb") as handle:
            if np.load(handle).tolist() != _stamp(path):
                return None
            z = {name: np.load(handle) for name in _SIDECAR_FIELDS}
        categories_json, images_json = z["categories_json"].tobytes(), z["images_json"].tobytes()
        spans = z["json_spans"].tolist()
        if spans:
            with open(path, "rb") as source:
                categories_json = _read_span(source, *spans[0:2])
                images_json = _read_span(source, *spans[2:4])
    except (OSError, ValueError, EOFError):
        return None
    image_id, category_id, source = (
        z[name].astype(np.int64) for name in ("image_id", "category_id", "source")
    )
    ids = z["record_ids"] if len(z["record_ids"]) else None
    boxes = BoxColumns(image_id, category_id, z["bbox"], z["score"], source, ids)
    loaded = PseudoFile(
        boxes, images_json, categories_json, z["image_ids"], orjson.loads(z["info_json"].tobytes())
    )
    lengths = z["record_lengths"].astype(np.int64)
    if len(spans) == 5 and len(lengths) == len(boxes) and len(boxes):
        ends = spans[4] + np.cumsum(lengths + 1) - 1  # records are joined by one comma
        loaded.records_in = (path, np.stack([ends - lengths, ends], 1))
    return loaded


def _read_span(handle, offset: int, length: int) -> bytes:
    handle.seek(offset)
    return handle.read(length)
