"""Boxes as columns (image ids, category ids, xywh boxes, scores, source, record ids): what the
pseudo-label readers, writers and record formatters share."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter, methodcaller
from typing import Any

import numpy as np

from decola_core.errors import DecolaError
from decola_core.evaluation.predictions import record_columns


@dataclass
class BoxColumns:
    """n boxes: image ids, category ids, xywh boxes, scores, the index of their input and their
    record ids (None: numbered 1..n when written)."""

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    source: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    record_id: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.image_id.shape[0])

    def select(self, index: np.ndarray) -> BoxColumns:
        return BoxColumns(
            self.image_id[index],
            self.category_id[index],
            self.bbox[index],
            self.score[index],
            self.source[index],
            None if self.record_id is None else self.record_id[index],
        )

    def numbered(self) -> BoxColumns:
        """These boxes with their record ids made explicit (1..n where there were none)."""
        if self.record_id is not None:
            return self
        ids = np.arange(1, len(self) + 1, dtype=np.int64)
        return BoxColumns(self.image_id, self.category_id, self.bbox, self.score, self.source, ids)

    @classmethod
    def merged_by_image(cls, parts: list[BoxColumns]) -> BoxColumns:
        """The boxes of all ``parts`` ordered by image id (stable: ties keep part order).

        Each column is scattered straight into place: one copy, not a concatenation and then
        a reordering."""
        image_id = np.concatenate([p.image_id for p in parts])
        position = np.empty(len(image_id), np.int64)
        position[np.argsort(image_id, kind="stable")] = np.arange(len(image_id))
        merged = []
        for name in ("image_id", "category_id", "bbox", "score", "source"):
            first = getattr(parts[0], name)
            column = np.empty((len(image_id), *first.shape[1:]), first.dtype)
            offset = 0
            for part in parts:
                column[position[offset : offset + len(part)]] = getattr(part, name)
                offset += len(part)
            merged.append(column)
        return cls(*merged)

    @classmethod
    def from_records(
        cls, records: list[dict[str, Any]], source: int = 0, what: str = "input"
    ) -> BoxColumns:
        n = len(records)
        image_id, category_id, bbox, score = record_columns(records, what, default_score=1.0)
        first = records[0] if records else {}
        if "source" in first:
            src = np.fromiter(map(methodcaller("get", "source", source), records), np.int64, n)
        else:
            src = np.full(n, source, np.int64)
        record_id = None
        if "id" in first:
            try:
                record_id = np.fromiter(map(itemgetter("id"), records), np.int64, n)
            except (KeyError, TypeError, ValueError):
                raise DecolaError(
                    f"{what}: some annotations have an integer 'id', others not"
                ) from None
        return cls(image_id, category_id, bbox, score, src, record_id)
