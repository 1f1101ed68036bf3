"""Deterministic, restartable training streams and single-dataset, single-orientation batches.

A stream is a function of (seed, position): resuming at a position reproduces the rest of the
stream exactly. Every rank takes every world-th element of the global stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


def repeat_factors(image_classes: list[np.ndarray], threshold: float) -> np.ndarray:
    """LVIS repeat factors: r(c) = max(1, sqrt(t / f(c))), r(image) = max over its classes."""
    num = len(image_classes)
    counts: dict[int, int] = {}
    for classes in image_classes:
        for c in np.unique(classes):
            counts[int(c)] = counts.get(int(c), 0) + 1
    factor = {c: max(1.0, math.sqrt(threshold / (n / num))) for c, n in counts.items()}
    return np.array(
        [max((factor[int(c)] for c in np.unique(cls)), default=1.0) for cls in image_classes]
    )


@dataclass
class TrainStream:
    """The infinite stream of global sample indices (into the concatenated datasets).

    ``weights`` (multi-dataset sampling) draws with replacement, ``repeat`` (repeat-factor
    sampling) expands each epoch with stochastic rounding; otherwise plain permutations.
    """

    size: int
    seed: int = 0
    weights: np.ndarray | None = None
    repeat: np.ndarray | None = None

    def epoch(self, e: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, e])
        if self.weights is not None:
            p = self.weights / self.weights.sum()
            return rng.choice(self.size, size=self.size, replace=True, p=p)
        if self.repeat is not None:
            reps = np.floor(self.repeat).astype(np.int64)
            reps += rng.random(self.size) < (self.repeat - reps)
            return rng.permutation(np.repeat(np.arange(self.size), reps))
        return rng.permutation(self.size)

    def for_rank(self, rank: int, world: int, start: int = 0) -> Iterator[tuple[int, int]]:
        """(rank-local position, index) of this rank's elements, from position ``start`` on.

        The rank owns the elements of the global stream whose global position is congruent to
        ``rank`` modulo ``world``.
        """
        local, global_pos, e = 0, 0, 0
        while True:
            indices = self.epoch(e)
            mine = indices[(rank - global_pos) % world :: world]
            if local + len(mine) > start:
                for i in range(max(0, start - local), len(mine)):
                    yield local + i, int(mine[i])
            local += len(mine)
            global_pos += len(indices)
            e += 1


def multi_dataset_weights(
    sizes: list[int], ratios: list[float], rfs: list[np.ndarray | None]
) -> np.ndarray:
    """Per-image weights: (max size / size_i) * (ratio_i / sum ratios) * rfs_i(image), with each
    dataset's repeat factors renormalised to sum to its size (spec pipeline §2.6)."""
    largest, total_ratio = max(sizes), sum(ratios)
    parts = []
    for size, ratio, factors in zip(sizes, ratios, rfs, strict=True):
        f = np.ones(size) if factors is None else factors * size / factors.sum()
        parts.append(f * (largest / size) * (ratio / total_ratio))
    return np.concatenate(parts)


@dataclass
class BatchPlanner:
    """Groups a rank's stream into batches of one dataset and one orientation.

    ``state`` (stream position and partly filled buckets) is saved in checkpoints; restoring it
    continues the same batches.
    """

    stream: TrainStream
    source_of: np.ndarray  # dataset index of every global sample
    landscape: np.ndarray  # width > height of every global sample
    batch_sizes: list[int]
    rank: int = 0
    world: int = 1
    by_orientation: bool = True  # data.aspect_ratio_grouping: landscape and portrait apart
    position: int = 0
    buckets: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def state(self) -> dict:
        return {"position": self.position, "buckets": {k: list(v) for k, v in self.buckets.items()}}

    def load_state(self, state: dict) -> None:
        self.position = int(state["position"])
        self.buckets = {k: [tuple(x) for x in v] for k, v in state["buckets"].items()}

    def batches(self) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """(source dataset, [(stream position, global index), ...]) forever."""
        for position, index in self.stream.for_rank(self.rank, self.world, self.position):
            self.position = position + 1
            source = int(self.source_of[index])
            key = f"{source}:{int(self.landscape[index])}" if self.by_orientation else f"{source}"
            bucket = self.buckets.setdefault(key, [])
            bucket.append((position, index))
            if len(bucket) == self.batch_sizes[source]:
                self.buckets[key] = []
                yield source, bucket
