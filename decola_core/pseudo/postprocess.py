"""convert (predictions -> pseudo-annotations), merge (several sizes -> one) and dedup (NMS on
corner boxes, class-aware by default) — the offline chain of spec pipeline §5 with its defects
fixed: every size kept separate, NMS on xyxy boxes, classes respected, inputs never overwritten,
outputs written atomically."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import nms

from decola_core.errors import DecolaError
from decola_core.evaluation.predictions import Predictions
from decola_core.pseudo.annotations import BoxColumns, PseudoFile, check_ids
from decola_core.utils.io import read_json_file

SMALL_GROUP = 8  # groups up to this size are suppressed vectorised


def convert(
    predictions: str | Path, image_info: str | Path, output: str | Path, *, min_score: float = 0.0
) -> int:
    """Predictions (a results JSON, a shard or a folder of shards) + the image info of the
    labelled set -> an LVIS-format pseudo-annotation file. Returns the number of boxes."""
    preds = Predictions.load(predictions)
    info = read_json_file(image_info, "image-info file")
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise DecolaError(f"{image_info}: not an image-info file (no 'images' list)")
    boxes = BoxColumns(
        preds.image_id, preds.category_id, preds.bbox, preds.score, np.zeros(len(preds), np.int64)
    )
    check_ids(boxes, info["images"], info.get("categories", []), str(predictions))
    if min_score > 0:
        boxes = boxes.select(np.nonzero(boxes.score >= min_score)[0])
    order = np.argsort(boxes.image_id, kind="stable")
    size = _min_size_of(Path(predictions))
    meta = {
        "converted_from": str(predictions),
        "image_info": str(image_info),
        "min_score": min_score,
    }
    if size is not None:
        meta["min_size"] = size
    PseudoFile.from_parsed(
        info["images"], info.get("categories", []), boxes.select(order), meta
    ).write(output, protect=(Path(predictions), Path(image_info)))
    return len(boxes)


def merge(inputs: list[str | Path], output: str | Path, *, allow_mismatch: bool = False) -> int:
    """Concatenate pseudo-annotation files (one per size); ids renumbered, inputs recorded."""
    if len(inputs) < 1:
        raise DecolaError("merge needs at least one input file")
    first = None
    parts, sources = [], []
    for k, path in enumerate(inputs):
        current = PseudoFile.load(path, source=k)
        if first is None:
            first = current
        elif not allow_mismatch:
            _same_set(first, current, inputs[0], path)
        parts.append(current.boxes.select(np.arange(len(current.boxes))))
        parts[-1].source = np.full(len(current.boxes), k, np.int64)
        sources.append(
            {
                "path": str(path),
                "boxes": len(current.boxes),
                "min_size": current.info.get("min_size", _min_size_of(Path(path))),
            }
        )
    boxes = BoxColumns.concat(parts)
    order = np.argsort(boxes.image_id, kind="stable")
    merged = first.with_boxes(boxes.select(order), {"merged_from": sources})
    if allow_mismatch:
        images = _union_images([PseudoFile.load(p).images for p in inputs[1:]], first.images)
        merged = PseudoFile.from_parsed(images, first.categories, merged.boxes, merged.info)
    merged.write(output, protect=tuple(Path(p) for p in inputs))
    return len(boxes)


@dataclass
class DedupReport:
    before: int
    after: int
    per_source: dict[str, tuple[int, int]]  # label -> (before, after)


def dedup(
    input_path: str | Path,
    output: str | Path,
    *,
    iou_threshold: float = 0.9,
    class_aware: bool = True,
) -> DedupReport:
    """Per-image NMS on xyxy boxes (converted from xywh); writes a new file, never the input."""
    if Path(output).resolve() == Path(input_path).resolve():
        raise DecolaError(f"refusing to overwrite the input {input_path}; choose another --output")
    data = PseudoFile.load(input_path)
    keep = nms_keep(data.boxes, iou_threshold, class_aware)
    kept = data.boxes.select(keep)
    labels = {
        k: s.get("min_size") or Path(s["path"]).stem
        for k, s in enumerate(data.info.get("merged_from", []))
    }
    per_source = {}
    for k in np.unique(data.boxes.source):
        name = f"min size {labels[int(k)]}" if int(k) in labels else f"input {int(k)}"
        per_source[name] = (int((data.boxes.source == k).sum()), int((kept.source == k).sum()))
    info = {
        **data.info,
        "deduplicated_from": str(input_path),
        "iou_threshold": iou_threshold,
        "class_aware": class_aware,
    }
    data.with_boxes(kept, info).write(output, protect=(Path(input_path),))
    return DedupReport(len(data.boxes), len(kept), per_source)


def nms_keep(boxes: BoxColumns, iou_threshold: float, class_aware: bool = True) -> np.ndarray:
    """Indices kept by per-image (and per-class) NMS, in the input order.

    Boxes are converted from xywh to corners first (the original fed xywh to NMS). Groups are
    tiny (one box per label and size), so groups of up to ``SMALL_GROUP`` boxes are suppressed
    all at once with padded pairwise IoUs; larger groups go through torchvision's NMS.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    xyxy = boxes.bbox.copy()
    xyxy[:, 2:] += xyxy[:, :2]
    _, group = np.unique(boxes.image_id, return_inverse=True)
    if class_aware:
        _, cls = np.unique(boxes.category_id, return_inverse=True)
        group = group.astype(np.int64) * (cls.max() + 1) + cls
    order = np.lexsort((np.arange(n), -boxes.score, group))  # by group, score descending
    sorted_group = group[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_group))[0] + 1]
    sizes = np.diff(np.r_[starts, n])
    keep = np.zeros(n, bool)
    small = sizes <= SMALL_GROUP
    keep[order[starts[sizes == 1]]] = True
    for g in range(2, SMALL_GROUP + 1):
        chosen = starts[small & (sizes == g)]
        if chosen.size:
            members = order[chosen[:, None] + np.arange(g)]  # (groups, g), best score first
            keep[members[_greedy_small(xyxy[members], iou_threshold)]] = True
    for start, size in zip(starts[~small], sizes[~small], strict=True):
        members = order[start : start + size]
        kept = nms(
            torch.from_numpy(xyxy[members]), torch.from_numpy(boxes.score[members]), iou_threshold
        )
        keep[members[kept.numpy()]] = True
    return np.nonzero(keep)[0]


def _greedy_small(b: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS for many groups of g score-sorted boxes at once: (groups, g, 4) -> kept mask."""
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = np.maximum(b[:, :, None, :2], b[:, None, :, :2])
    rb = np.minimum(b[:, :, None, 2:], b[:, None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)
    kept = np.ones(b.shape[:2], bool)
    for i in range(1, b.shape[1]):
        suppressed = (kept[:, :i] & (iou[:, :i, i] > threshold)).any(1)
        kept[:, i] = ~suppressed
    return kept


def _same_set(a: PseudoFile, b: PseudoFile, path_a, path_b) -> None:
    ids_a, ids_b = np.sort(a.image_ids), np.sort(b.image_ids)
    if not np.array_equal(ids_a, ids_b):
        raise DecolaError(
            f"{path_b} has a different image set than {path_a} ({len(ids_b):,} vs "
            f"{len(ids_a):,} images); pass --allow-mismatch to merge anyway"
        )
    if a.categories_json != b.categories_json and sorted(c["id"] for c in a.categories) != sorted(
        c["id"] for c in b.categories
    ):
        raise DecolaError(
            f"{path_b} has different categories than {path_a}; pass --allow-mismatch "
            "to merge anyway"
        )


def _union_images(others: list[list[dict]], first: list[dict]) -> list[dict]:
    seen = {img["id"] for img in first}
    images = list(first)
    for group in others:
        for img in group:
            if img["id"] not in seen:
                seen.add(img["id"])
                images.append(img)
    return images


def _min_size_of(path: Path) -> int | None:
    match = re.search(r"minsize_(\d+)", str(path))
    return int(match.group(1)) if match else None
