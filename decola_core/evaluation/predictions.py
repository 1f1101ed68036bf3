"""Detections as columns (numpy arrays), not per-box dicts: read, validate, cap, write.

The file format is the LVIS results format: a JSON array of ``{image_id, category_id, bbox
[x, y, w, h], score}``. Shards (one per rank) are JSON-lines files of the same records; they are
combined by streaming into one results file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any

import numpy as np

from decola_core.errors import DecolaError
from decola_core.utils.memory import gc_paused
from decola_core.utils.parallel import fork_map, fork_workers


@dataclass
class Predictions:
    """Columns of n detections. ``order`` keeps the input order for stable tie-breaking."""

    image_id: np.ndarray  # int64 (n,)
    category_id: np.ndarray  # int64 (n,)
    bbox: np.ndarray  # float64 (n, 4) xywh
    score: np.ndarray  # float64 (n,)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @classmethod
    def empty(cls) -> Predictions:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def from_records(
        cls, records: Iterable[dict[str, Any]], source: str = "predictions"
    ) -> Predictions:
        records = list(records)
        if not records:
            return cls.empty()
        return cls(*record_columns(records, source))

    @classmethod
    @gc_paused()
    def load(cls, path: str | Path) -> Predictions:
        """A results JSON array, a JSON-lines shard, or a folder of ``*.jsonl`` shards.

        Large inputs are parsed by forked workers (Linux): a folder shard by shard, a results
        array in parts split at record boundaries.
        """
        import orjson

        path = Path(path)
        if path.is_dir():
            shards = sorted(path.glob("*.jsonl"))
            size = sum(p.stat().st_size for p in shards)
            workers = fork_workers(size, PARALLEL_PARSE_BYTES) if len(shards) > 1 else 1
            if workers > 1:
                return cls.concat(fork_map(_load_shard, None, shards, workers))
            return cls.concat([cls.load(p) for p in shards])
        if not path.is_file():
            raise DecolaError(f"predictions not found: {path}")
        raw = path.read_bytes()
        if not raw.strip():
            raise DecolaError(f"{path}: the file is empty (expected a JSON array of detections)")
        if path.suffix == ".jsonl":
            raw = b"[" + b",".join(line for line in raw.splitlines() if line.strip()) + b"]"
        else:
            parallel = _load_array_in_parts(raw, str(path))
            if parallel is not None:
                return parallel
        try:
            records = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise DecolaError(f"{path}: invalid JSON ({err})") from None
        if not isinstance(records, list):
            raise DecolaError(f"{path}: expected a JSON array of detections")
        return cls.from_records(records, str(path))

    @classmethod
    def concat(cls, parts: list[Predictions]) -> Predictions:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("image_id", "category_id", "bbox", "score")
            )
        )

    def select(self, index: np.ndarray) -> Predictions:
        return Predictions(
            self.image_id[index], self.category_id[index], self.bbox[index], self.score[index]
        )

    # ---- validation -----------------------------------------------------------------------

    def check_against(self, image_ids: np.ndarray, category_ids: np.ndarray, source: str) -> None:
        """Clear errors for unknown ids and malformed boxes or scores."""
        bad_images = unknown_ids(self.image_id, image_ids)
        if bad_images.size:
            raise DecolaError(
                f"predictions name {bad_images.size} image ids that are not in {source} "
                f"(e.g. {bad_images[:5].tolist()})"
            )
        bad_cats = unknown_ids(self.category_id, category_ids)
        if bad_cats.size:
            raise DecolaError(
                f"predictions name category ids that are not in {source}: {bad_cats[:10].tolist()}"
            )
        if not np.isfinite(self.bbox).all() or (self.bbox[:, 2:] < 0).any():
            rows = np.nonzero(~np.isfinite(self.bbox).all(1) | (self.bbox[:, 2:] < 0).any(1))[0]
            raise DecolaError(
                f"predictions have malformed boxes (non-finite or negative width/height) "
                f"at records {rows[:5].tolist()}"
            )
        if not np.isfinite(self.score).all():
            raise DecolaError("predictions have non-finite scores")

    # ---- caps (stable: ties keep the input order, as the lvis-api's sort does) ---------------

    def _top_k_within(self, keys: list[np.ndarray], k: int) -> Predictions:
        if k < 0 or len(self) == 0:
            return self
        order = np.lexsort((np.arange(len(self)), -self.score, *reversed(keys)))
        sorted_keys = np.stack([key[order] for key in keys], 1)
        new_group = np.ones(len(order), dtype=bool)
        new_group[1:] = (sorted_keys[1:] != sorted_keys[:-1]).any(1)
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
        rank = np.arange(len(order)) - group_start
        keep = np.sort(order[rank < k])  # back to input order
        return self.select(keep)

    def cap_per_image(self, k: int) -> Predictions:
        """The top-k detections of every image (k < 0: no cap)."""
        return self._top_k_within([self.image_id], k)

    def cap_per_image_class(self, k: int) -> Predictions:
        """The top-k detections of every (image, category) (k < 0: no cap)."""
        return self._top_k_within([self.image_id, self.category_id], k)

    def cap_per_class(self, k: int) -> Predictions:
        """The top-k detections of every category over the whole set (fixed AP)."""
        return self._top_k_within([self.category_id], k)

    # ---- output -----------------------------------------------------------------------------

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "image_id": int(i),
                "category_id": int(c),
                "bbox": [float(v) for v in b],
                "score": float(s),
            }
            for i, c, b, s in zip(
                self.image_id, self.category_id, self.bbox, self.score, strict=True
            )
        ]

    def iter_json_lines(self) -> Iterator[bytes]:
        import orjson

        for record in self.to_records():
            yield orjson.dumps(record)


def unknown_ids(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The distinct ``values`` missing from ``known`` (binary search; no hashing of all values)."""
    if not len(values):
        return np.zeros(0, np.int64)
    known = np.sort(known)
    if not len(known):
        return np.unique(values)
    found = known[np.searchsorted(known, values).clip(max=len(known) - 1)] == values
    return np.unique(values[~found])


def record_columns(
    records: list[dict[str, Any]], what: str, default_score: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """image_id, category_id, bbox (n, 4) and score columns of detection records.

    The loops run in C (``map`` with item getters): no Python frame per record. A record
    without a score is an error unless ``default_score`` is given.
    """
    n = len(records)
    score_of = (
        itemgetter("score")
        if default_score is None
        else methodcaller("get", "score", default_score)
    )
    needs = "image_id, category_id, bbox [x, y, w, h]" + (
        " and score" if default_score is None else ""
    )
    try:
        image_id = np.fromiter(map(itemgetter("image_id"), records), np.int64, n)
        category_id = np.fromiter(map(itemgetter("category_id"), records), np.int64, n)
        score = np.fromiter(map(score_of, records), np.float64, n)
        boxes = list(map(itemgetter("bbox"), records))
        lengths = np.fromiter(map(len, boxes), np.int64, n)
        if (lengths != 4).any():
            bad = int(np.flatnonzero(lengths != 4)[0])
            raise DecolaError(
                f"{what}: bbox must be [x, y, w, h] (record {bad} has {lengths[bad]} numbers)"
            )
        bbox = np.fromiter(chain.from_iterable(boxes), np.float64, 4 * n).reshape(n, 4)
    except (KeyError, TypeError, ValueError) as err:
        raise DecolaError(
            f"{what}: every record needs {needs} ({type(err).__name__}: {err})"
        ) from None
    return image_id, category_id, bbox, score


PARALLEL_PARSE_BYTES = 16 << 20  # below this, parsing in one process is as fast


def _load_shard(_: None, path: Path) -> Predictions:
    return Predictions.load(path)


def _load_array_in_parts(raw: bytes, source: str) -> Predictions | None:
    """Parse a large results array in forked workers; None where it does not pay off or the
    array cannot be split (the caller then parses it whole, reporting any error)."""
    import orjson

    workers = fork_workers(len(raw), PARALLEL_PARSE_BYTES)
    parts = _record_aligned_parts(raw, 4 * workers) if workers > 1 else None
    if not parts:
        return None
    try:
        return Predictions.concat(fork_map(_parse_part, (raw, source), parts, workers))
    except (DecolaError, orjson.JSONDecodeError):
        return None


def _record_aligned_parts(raw: bytes, count: int) -> list[tuple[int, int]] | None:
    """About ``count`` byte ranges of the objects of a JSON array, split between objects.

    A split is placed at a ``}`` followed by ``,`` and ``{`` (whitespace allowed). Should that
    sequence lie inside a string or a nested list, a part fails to parse and the caller falls
    back to one parse, so a wrong split costs time, never correctness.
    """
    first, last = raw.find(b"["), raw.rfind(b"]")
    if first < 0 or last <= first or raw[:first].strip() or raw[last + 1 :].strip():
        return None
    parts, start = [], first + 1
    for target in np.linspace(first, last, count + 1)[1:-1].astype(int).tolist():
        end = raw.find(b"}", max(target, start), last)
        while end >= 0:
            after = raw[end + 1 : end + 64].lstrip()
            if after.startswith(b",") and after[1:].lstrip().startswith(b"{"):
                break
            end = raw.find(b"}", end + 1, last)
        if end < 0:
            break
        parts.append((start, end + 1))
        start = raw.index(b",", end + 1) + 1
    parts.append((start, last))
    return parts if len(parts) > 1 else None


@gc_paused()
def _parse_part(shared: tuple[bytes, str], bounds: tuple[int, int]) -> Predictions:
    import orjson

    raw, source = shared
    records = orjson.loads(b"[" + raw[bounds[0] : bounds[1]] + b"]")
    return Predictions.from_records(records, source)
