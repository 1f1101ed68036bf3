"""Writing the annotation records of a pseudo-annotation file: formatted from box columns (by
forked workers for large files) or copied as text from the file they were read from.

Every function writes the records comma-joined, without the surrounding brackets, and returns
the byte length of each record, so the caller can record where each one lies in the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from decola_core.pseudo.columns import BoxColumns
from decola_core.utils.parallel import fork_map, fork_workers

PARALLEL_MIN_BOXES = 150_000  # below this, forking formatters costs more than it saves
CHUNK_BOXES = 50_000
COPY_WINDOW = 1 << 26  # bytes of a source file mapped at a time


def write_formatted(out: IO[bytes], boxes: BoxColumns, workers: int | None = None) -> np.ndarray:
    """Format the records of ``boxes`` into ``out`` (ids 1..n unless they have their own).

    Formatting costs about 1 us a box in one process. For large files (Linux; ``workers``
    defaults to the usable cores, at most 8) forked workers each format a chunk and write it
    straight into the file at its offset, which is known as soon as the chunks before it are
    formatted; the bytes are the same as from one process.
    """
    bounds = [
        (start, min(start + CHUNK_BOXES, len(boxes))) for start in range(0, len(boxes), CHUNK_BOXES)
    ]
    workers = formatting_workers(len(boxes)) if workers is None else workers
    if workers < 2 or len(bounds) < 2:
        lengths = []
        for i, (start, stop) in enumerate(bounds):
            text, chunk_lengths = format_records(boxes, start, stop)
            if i:
                out.write(b",")
            out.write(text)
            lengths.append(chunk_lengths)
        return np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    return _write_in_workers(out, boxes, bounds, workers)


def formatting_workers(num_boxes: int) -> int:
    """How many processes format ``num_boxes`` records (1: this one)."""
    return fork_workers(num_boxes, PARALLEL_MIN_BOXES)


def format_records(boxes: BoxColumns, start: int, stop: int) -> tuple[bytes, np.ndarray]:
    """Records ``start..stop`` as JSON text (comma-joined) and the byte length of each."""
    import orjson

    if boxes.record_id is None:
        ids = range(start + 1, stop + 1)
    else:
        ids = boxes.record_id[start:stop].tolist()
    columns = zip(
        ids,
        boxes.image_id[start:stop].tolist(),
        boxes.category_id[start:stop].tolist(),
        boxes.bbox[start:stop].tolist(),
        boxes.score[start:stop].tolist(),
        boxes.source[start:stop].tolist(),
        strict=True,
    )
    records = [
        {"id": i, "image_id": img, "category_id": cat, "bbox": box, "score": sc, "source": src}
        for i, img, cat, box, sc, src in columns
    ]
    text = orjson.dumps(records)[1:-1]
    # a record is a flat object of numbers: each '}' ends one
    ends = np.flatnonzero(np.frombuffer(text, np.uint8) == ord("}")) + 1
    return text, np.diff(ends, prepend=-1) - 1


def copy_records(out: IO[bytes], source: Path, spans: np.ndarray) -> np.ndarray:
    """Copy the records at byte ``spans`` (n, 2) of ``source`` into ``out``.

    Adjacent records are copied as one run (with the commas between them), through a window of
    the file mapped at a time, so memory stays bounded.
    """
    import mmap

    if not len(spans):
        return np.zeros(0, np.int64)
    breaks = np.flatnonzero(spans[1:, 0] != spans[:-1, 1] + 1) + 1  # new run where not adjacent
    starts = spans[np.r_[0, breaks], 0]
    ends = spans[np.r_[breaks - 1, len(spans) - 1], 1]
    ends[:-1] += 1  # each run but the last takes the comma that follows it in the source
    with open(source, "rb") as handle:
        first = 0
        while first < len(starts):
            base = int(starts[first]) - int(starts[first]) % mmap.ALLOCATIONGRANULARITY
            stop = max(first + 1, int(np.searchsorted(ends, base + COPY_WINDOW, "right")))
            size = int(ends[stop - 1]) - base
            with (
                mmap.mmap(handle.fileno(), size, offset=base, access=mmap.ACCESS_READ) as window,
                memoryview(window) as view,
            ):
                runs = zip(
                    (starts[first:stop] - base).tolist(),
                    (ends[first:stop] - base).tolist(),
                    strict=True,
                )
                out.write(b"".join([view[start:end] for start, end in runs]))
            first = stop
    return spans[:, 1] - spans[:, 0]


@dataclass
class _Placement:
    """What the forked workers share: the columns, the output file descriptor, and where each
    chunk starts (-1 until the chunks before it are formatted)."""

    boxes: BoxColumns
    bounds: list[tuple[int, int]]
    fd: int
    starts: Any  # multiprocessing RawArray of int64
    known: Any  # multiprocessing Condition, notified when a start becomes known


def _write_in_workers(
    out: IO[bytes], boxes: BoxColumns, bounds: list[tuple[int, int]], workers: int
) -> np.ndarray:
    import multiprocessing  # only where forked writers are started (start-up time)

    context = multiprocessing.get_context("fork")
    out.flush()
    starts = context.RawArray("q", [-1] * (len(bounds) + 1))
    starts[0] = out.tell()
    placement = _Placement(boxes, bounds, out.fileno(), starts, context.Condition())
    # chunks are handed out in order, so the chunk a worker waits on is always in hand
    lengths = fork_map(_format_and_place, placement, range(len(bounds)), workers)
    out.seek(starts[len(bounds)])
    return np.concatenate(lengths)


def _format_and_place(job: _Placement, chunk: int) -> np.ndarray:
    text, lengths = format_records(job.boxes, *job.bounds[chunk])
    parts = [b",", text] if chunk else [text]
    with job.known:
        job.known.wait_for(lambda: job.starts[chunk] >= 0)
        offset = job.starts[chunk]
        job.starts[chunk + 1] = offset + sum(map(len, parts))
        job.known.notify_all()
    for part in parts:  # pwrite may write less than asked
        view = memoryview(part)
        while view:
            written = os.pwrite(job.fd, view, offset)
            offset += written
            view = view[written:]
    return lengths
