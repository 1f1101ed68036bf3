"""convert (predictions -> pseudo-annotations), merge (several sizes -> one) and dedup (NMS on
corner boxes, class-aware by default) — the offline chain of spec pipeline §5 with its defects
fixed: every size kept separate, NMS on xyxy boxes, classes respected, inputs never overwritten,
outputs written atomically."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decola_core.errors import DecolaError
from decola_core.evaluation.predictions import Predictions
from decola_core.jobs import PseudoChainJob
from decola_core.pseudo.annotations import PseudoFile
from decola_core.pseudo.columns import BoxColumns
from decola_core.utils.memory import gc_paused

log = logging.getLogger(__name__)
GROUP_CHUNK = 1 << 22  # pairwise IoUs computed at once in nms_keep (about 32 MiB)


@gc_paused()
def convert(
    predictions: str | Path,
    image_info: str | Path,
    output: str | Path,
    *,
    min_score: float = PseudoChainJob.min_score,
    skip_invalid: bool = PseudoChainJob.skip_invalid,
    cache_dir: str | Path | None = None,
) -> int:
    """Predictions (a results JSON, a shard or a folder of shards) + the image info of the
    labelled set -> an LVIS-format pseudo-annotation file. Returns the number of boxes.

    With ``cache_dir`` the image info is parsed once and read from a columnar cache by the
    conversions of the other sizes.
    """
    preds = _valid_boxes(Predictions.load(predictions), predictions, skip_invalid)
    info = PseudoFile.load(image_info, cache_dir=cache_dir, what="image-info file")
    preds.check_against(info.image_ids, info.category_ids, str(image_info))
    if min_score > 0:
        preds = preds.select(np.nonzero(preds.score >= min_score)[0])
    order = np.argsort(preds.image_id, kind="stable")
    boxes = BoxColumns(
        preds.image_id, preds.category_id, preds.bbox, preds.score, np.zeros(len(preds), np.int64)
    ).select(order)
    meta = {
        "converted_from": str(predictions),
        "image_info": str(image_info),
        "min_score": min_score,
    }
    size = _min_size_of(Path(predictions))
    if size is not None:
        meta["min_size"] = size
    info.with_boxes(boxes, meta).write(output, protect=(Path(predictions), Path(image_info)))
    return len(boxes)


def _valid_boxes(preds: Predictions, source, skip_invalid: bool) -> Predictions:
    """Boxes with finite coordinates and score and no negative width or height (empty boxes
    stay: NMS never suppresses with them); the others refused (naming the first) or, with
    ``skip_invalid``, dropped and counted."""
    bbox = preds.bbox
    ok = np.isfinite(bbox).all(axis=1) & np.isfinite(preds.score)
    ok &= (bbox[:, 2] >= 0) & (bbox[:, 3] >= 0)
    bad = np.nonzero(~ok)[0]
    if bad.size == 0:
        return preds
    first = int(bad[0])
    if not skip_invalid:
        raise DecolaError(
            f"{source}: {bad.size:,} boxes with NaN or negative size (the first is record "
            f"{first}, bbox {bbox[first].tolist()}); --skip-invalid drops them"
        )
    log.warning("%s: dropped %s boxes with NaN or negative size", source, f"{bad.size:,}")
    return preds.select(np.nonzero(ok)[0])


@gc_paused()
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
        current.boxes.source = np.full(len(current.boxes), k, np.int64)
        parts.append(current.boxes)
        sources.append(
            {
                "path": str(path),
                "boxes": len(current.boxes),
                "min_size": current.info.get("min_size", _min_size_of(Path(path))),
            }
        )
    boxes = BoxColumns.merged_by_image(parts)
    merged = first.with_boxes(boxes, {"merged_from": sources})
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


@gc_paused()
def dedup(
    input_path: str | Path,
    output: str | Path,
    *,
    iou_threshold: float = PseudoChainJob.iou_threshold,
    class_aware: bool = PseudoChainJob.class_aware,
) -> DedupReport:
    """Per-image NMS on xyxy boxes (converted from xywh); writes a new file, never the input.

    Kept boxes keep their record ids (unique, no longer consecutive); a merged file written by
    decola has them copied as text rather than formatted again.
    """
    if Path(output).resolve() == Path(input_path).resolve():
        raise DecolaError(f"refusing to overwrite the input {input_path}; choose another --output")
    data = PseudoFile.load(input_path)
    info = {
        **data.info,
        "deduplicated_from": str(input_path),
        "iou_threshold": iou_threshold,
        "class_aware": class_aware,
    }
    deduplicated = data.subset(nms_keep(data.boxes, iou_threshold, class_aware), info)
    kept = deduplicated.boxes
    labels = {
        k: s.get("min_size") or Path(s["path"]).stem
        for k, s in enumerate(data.info.get("merged_from", []))
    }
    per_source = {}
    for k in np.unique(data.boxes.source):
        name = f"min size {labels[int(k)]}" if int(k) in labels else f"input {int(k)}"
        per_source[name] = (int((data.boxes.source == k).sum()), int((kept.source == k).sum()))
    # the chain ends here: the next reader (training) parses the JSON, so no sidecar
    deduplicated.write(output, protect=(Path(input_path),), sidecar=False)
    return DedupReport(len(data.boxes), len(kept), per_source)


@dataclass
class PseudoChainResult:
    converted: list[Path]
    merged: Path
    output: Path
    dedup: DedupReport


def run_pseudo_chain(job: PseudoChainJob) -> PseudoChainResult:
    """convert every size, merge them and dedup the result."""
    converted = []
    for size in job.min_sizes:
        path = job.folder / f"pseudo_minsize_{size}.json"
        convert(
            job.folder / f"minsize_{size}",
            job.image_info,
            path,
            min_score=job.min_score,
            cache_dir=job.cache_dir,
        )
        converted.append(path)
    merged = job.folder / "pseudo_merged.json"
    merge(converted, merged)
    output = job.folder / "pseudo_labels.json"
    report = dedup(merged, output, iou_threshold=job.iou_threshold, class_aware=job.class_aware)
    return PseudoChainResult(converted, merged, output, report)


def nms_keep(boxes: BoxColumns, iou_threshold: float, class_aware: bool = True) -> np.ndarray:
    """Indices kept by greedy per-image (and per-class) NMS, in the input order.

    Boxes are converted from xywh to corners first (the original fed xywh to NMS). A box is
    suppressed by a higher-scoring kept box of its group with IoU > ``iou_threshold`` (ties in
    score: the earlier box wins), as torchvision's ``nms`` does. Groups are tiny (one box per
    label and size), so they are bucketed by size (padded beyond 8) and suppressed many at
    once; the Python loop runs over positions within a bucket, never over groups.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    group = _group_key(boxes, class_aware)
    order = np.argsort(group, kind="stable")  # cheap: files are sorted by image already
    starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    sizes = np.diff(np.r_[starts, n])
    keep = np.zeros(n, bool)
    keep[order[starts[sizes == 1]]] = True
    width = np.where(sizes <= 8, sizes, 2 ** np.ceil(np.log2(np.maximum(sizes, 1))).astype(int))
    for w in np.unique(width[sizes > 1]).tolist():
        chosen = np.flatnonzero((width == w) & (sizes > 1))
        for part in np.array_split(chosen, -(-len(chosen) * w * w // GROUP_CHUNK)):
            position = np.arange(w)
            valid = position < sizes[part, None]  # (groups, w): padding is not a box
            members = order[np.where(valid, starts[part, None] + position, starts[part, None])]
            score = np.where(valid, -boxes.score[members], np.inf)
            by_score = np.argsort(score, axis=1, kind="stable")  # best first, padding last
            members = np.take_along_axis(members, by_score, 1)
            kept = _greedy(boxes.bbox[members], valid, iou_threshold)
            keep[members[kept]] = True
    return np.flatnonzero(keep)


def _group_key(boxes: BoxColumns, class_aware: bool) -> np.ndarray:
    """One integer per box naming its NMS group: its image, or its image and class."""
    image, category = boxes.image_id, boxes.category_id
    if not class_aware:
        return image
    if min(image.min(), category.min()) < 0 or int(image.max()) >= np.iinfo(np.int64).max // (
        int(category.max()) + 1
    ):  # ids outside the usual range: use their ranks
        image = np.unique(image, return_inverse=True)[1].astype(np.int64)
        category = np.unique(category, return_inverse=True)[1].astype(np.int64)
    return image * (int(category.max()) + 1) + category


def _greedy(xywh: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS of many groups of w score-sorted xywh boxes at once: (groups, w, 4) -> kept
    mask. The boxes become corners (x1, y1, x2 = x + w, y2 = y + h) first.

    Works on (position, group) arrays so each step is one contiguous vector operation; IoUs are
    computed for the w(w-1)/2 pairs only, with torchvision's formula (IoU NaN for empty boxes,
    which never suppresses)."""
    w = xywh.shape[1]
    later, earlier = np.tril_indices(w, -1)  # pairs (j, i < j), grouped by j
    x1, y1, width, height = (np.ascontiguousarray(xywh[:, :, k].T) for k in range(4))
    x2, y2 = x1 + width, y1 + height
    area = (x2 - x1) * (y2 - y1)
    inter_w = np.minimum(x2[earlier], x2[later])
    inter_w -= np.maximum(x1[earlier], x1[later])
    inter_h = np.minimum(y2[earlier], y2[later])
    inter_h -= np.maximum(y1[earlier], y1[later])
    inter = np.maximum(inter_w, 0) * np.maximum(inter_h, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        overlaps = inter / (area[earlier] + area[later] - inter) > threshold  # (pairs, groups)
    kept = np.ascontiguousarray(valid.T)
    for j in range(1, w):
        first = j * (j - 1) // 2
        kept[j] &= ~(overlaps[first : first + j] & kept[:j]).any(0)
    return kept.T


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
