"""A vectorised reimplementation of the lvis-api's box evaluation, giving identical numbers.

The lvis-api visits every (image, category) pair in Python; here only pairs with ground truth
or detections are touched, and the greedy matching runs for all pairs, areas and IoU thresholds
at once, one detection rank at a time. Every rule of the lvis-api is kept: federated filtering
(a detection counts only for categories annotated as present or negative in its image), unmatched
detections of not-exhaustively annotated categories ignored, ground truth outside an area range
ignored (matched last), ties resolved in the lvis-api's order, its IoU, precision envelope and
101-point recall sampling.
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0, 1e5**2], [0, 32**2], [32**2, 96**2], [96**2, 1e5**2]], dtype=np.float64)


def lvis_precision_recall(
    gt: dict, image_ids: np.ndarray, category_ids: np.ndarray, d_img, d_cat, d_box, d_score
):
    """(precision (T, R, K, A), recall (T, K, A)) like ``LVISEval.accumulate``; -1 where empty.

    Detections are columns, already cut to the per-image limit, in results-file order.
    """
    num_t, num_a, num_k = len(IOU_THRESHOLDS), len(AREA_RANGES), len(category_ids)
    img_index = {int(i): n for n, i in enumerate(image_ids)}
    cat_index = {int(c): n for n, c in enumerate(category_ids)}
    num_c = num_k
    # ---- ground truth, in annotation order (the lvis-api's _gts order) ----
    anns = [
        a for a in gt["annotations"] if a["image_id"] in img_index and a["category_id"] in cat_index
    ]
    g_img = np.fromiter((img_index[a["image_id"]] for a in anns), np.int64, len(anns))
    g_cat = np.fromiter((cat_index[a["category_id"]] for a in anns), np.int64, len(anns))
    g_box = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    g_area = np.fromiter((a["area"] for a in anns), np.float64, len(anns))
    g_key = g_img * num_c + g_cat
    # ---- federated filtering of detections ----
    d_img = (
        np.array([img_index[int(i)] for i in d_img], dtype=np.int64)
        if len(d_img)
        else np.zeros(0, np.int64)
    )
    d_cat = (
        np.array([cat_index[int(c)] for c in d_cat], dtype=np.int64)
        if len(d_cat)
        else np.zeros(0, np.int64)
    )
    d_key = d_img * num_c + d_cat
    neg_keys, nel_keys = [], []
    for img in gt["images"]:
        n = img_index.get(img["id"])
        if n is None:
            continue
        neg_keys += [
            n * num_c + cat_index[c] for c in img.get("neg_category_ids", []) if c in cat_index
        ]
        nel_keys += [
            n * num_c + cat_index[c]
            for c in img.get("not_exhaustive_category_ids", [])
            if c in cat_index
        ]
    allowed = np.union1d(np.unique(g_key), np.array(neg_keys, dtype=np.int64))
    keep = np.isin(d_key, allowed)
    d_key, d_img, d_cat = d_key[keep], d_img[keep], d_cat[keep]
    d_box, d_score = np.asarray(d_box, np.float64)[keep], np.asarray(d_score, np.float64)[keep]
    d_order = np.arange(len(d_key))
    d_area = d_box[:, 2] * d_box[:, 3]
    d_not_exhaustive = np.isin(d_key, np.array(nel_keys, dtype=np.int64))
    # rank of each detection inside its (image, category): score descending, stable
    by_pair = np.lexsort((d_order, -d_score, d_key))
    d_rank = np.empty(len(d_key), np.int64)
    starts = (
        np.r_[0, np.nonzero(np.diff(d_key[by_pair]))[0] + 1]
        if len(d_key)
        else np.zeros(0, np.int64)
    )
    group_sizes = np.diff(np.r_[starts, len(d_key)])
    d_rank[by_pair] = np.arange(len(d_key)) - np.repeat(starts, group_sizes)
    # ---- ground-truth ignore flags per area; matching order per area (non-ignored first) ----
    g_ignore = (g_area[:, None] < AREA_RANGES[:, 0]) | (
        g_area[:, None] > AREA_RANGES[:, 1]
    )  # (G, A)
    matched, matched_ignored = _greedy_match(d_key, d_rank, d_box, g_key, g_box, g_ignore)
    # ---- detection ignore flags (T, A) per detection ----
    outside = (d_area[:, None] < AREA_RANGES[:, 0]) | (
        d_area[:, None] > AREA_RANGES[:, 1]
    )  # (D, A)
    unmatched_ignore = (outside | d_not_exhaustive[:, None])[:, None, :] & ~matched  # (D, T, A)
    d_ignore = matched_ignored | unmatched_ignore
    # ---- accumulate per category and area ----
    precision = -np.ones((num_t, len(RECALL_THRESHOLDS), num_k, num_a))
    recall = -np.ones((num_t, num_k, num_a))
    order = np.lexsort((d_rank, d_img, -d_score, d_cat))  # by category, then the lvis-api's order
    cat_sorted = d_cat[order]
    bounds = np.searchsorted(cat_sorted, np.arange(num_k + 1))
    num_gt = np.zeros((num_k, num_a), np.int64)
    np.add.at(num_gt, g_cat, (~g_ignore).astype(np.int64))
    has_pair = np.zeros(num_k, bool)
    has_pair[np.unique(np.r_[g_cat, d_cat])] = True
    for k in np.nonzero(has_pair)[0]:
        rows = order[bounds[k] : bounds[k + 1]]
        for a in range(num_a):
            if num_gt[k, a] == 0:
                continue
            m = matched[rows, :, a].T  # (T, n)
            ig = d_ignore[rows, :, a].T
            tp = np.cumsum(m & ~ig, axis=1).astype(np.float64)
            fp = np.cumsum(~m & ~ig, axis=1).astype(np.float64)
            n = tp.shape[1]
            if n == 0:
                recall[:, k, a] = 0
                precision[:, :, k, a] = 0
                continue
            rc = tp / num_gt[k, a]
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            recall[:, k, a] = rc[:, -1]
            for t in range(num_t):
                idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                values = np.zeros(len(RECALL_THRESHOLDS))
                inside = idx < n
                values[inside] = pr[t, idx[inside]]
                precision[t, :, k, a] = values
    return precision, recall


def _greedy_match(d_key, d_rank, d_box, g_key, g_box, g_ignore):
    """The lvis-api's greedy matching for every detection, IoU threshold and area range.

    Returns ``matched`` (D, T, A) and ``matched_ignored`` (D, T, A): matched to a ground-truth
    box that is ignored in that area range.
    """
    num_d, num_t, num_a = len(d_key), len(IOU_THRESHOLDS), g_ignore.shape[1]
    matched = np.zeros((num_d, num_t, num_a), bool)
    matched_ignored = np.zeros((num_d, num_t, num_a), bool)
    if num_d == 0 or len(g_key) == 0:
        return matched, matched_ignored
    # all (detection, ground truth) combinations of the same (image, category)
    g_order = np.argsort(g_key, kind="stable")  # keeps annotation order inside a pair
    g_sorted = g_key[g_order]
    lo = np.searchsorted(g_sorted, d_key, side="left")
    hi = np.searchsorted(g_sorted, d_key, side="right")
    counts = hi - lo
    det = np.repeat(np.arange(num_d), counts)
    if det.size == 0:
        return matched, matched_ignored
    offset = np.arange(det.size) - np.repeat(np.cumsum(counts) - counts, counts)
    gts = g_order[np.repeat(lo, counts) + offset]  # gt index; position in pair = offset
    iou = _bbox_iou(d_box[det], g_box[gts])
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    taken = np.zeros((len(g_key), num_t, num_a), bool)  # gt already matched
    ranks = d_rank[det]
    combo_order = np.argsort(ranks, kind="stable")
    rank_bounds = np.searchsorted(ranks[combo_order], np.arange(ranks.max() + 2))
    for r in range(ranks.max() + 1):
        idx = combo_order[rank_bounds[r] : rank_bounds[r + 1]]
        if idx.size == 0:
            continue
        # combinations of one detection are contiguous, in ground-truth order (offset 0..G-1)
        c_det, c_gt, c_iou, c_pos = det[idx], gts[idx], iou[idx], offset[idx]
        block_start = np.r_[0, np.nonzero(np.diff(c_det))[0] + 1]
        block = np.repeat(np.arange(len(block_start)), np.diff(np.r_[block_start, len(c_det)]))
        ok = (c_iou[:, None, None] >= thresholds[None, :, None]) & ~taken[c_gt]  # (n, T, A)
        # the lvis-api keeps the best match among non-ignored ground truth and only looks at
        # ignored ground truth when there is none; among equals the highest IoU, then the
        # later box wins (its running threshold is updated with ">=")
        group = np.where(ok, (~g_ignore[c_gt])[:, None, :].astype(np.float64), -np.inf)
        best_group = np.maximum.reduceat(group, block_start, axis=0)
        in_group = ok & (group == best_group[block])
        best_iou = np.maximum.reduceat(
            np.where(in_group, c_iou[:, None, None], -np.inf), block_start, axis=0
        )
        at_best = in_group & (c_iou[:, None, None] == best_iou[block])
        best_pos = np.maximum.reduceat(
            np.where(at_best, c_pos[:, None, None], -1), block_start, axis=0
        )
        bb, tt, aa = np.nonzero(best_pos >= 0)
        if bb.size == 0:
            continue
        chosen = block_start[bb] + best_pos[bb, tt, aa]
        detections = c_det[chosen]
        matched[detections, tt, aa] = True
        matched_ignored[detections, tt, aa] = g_ignore[c_gt[chosen], aa]
        taken[c_gt[chosen], tt, aa] = True
    return matched, matched_ignored


def _bbox_iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """pycocotools' box IoU (xywh, not crowd), element-wise."""
    w = np.minimum(d[:, 0] + d[:, 2], g[:, 0] + g[:, 2]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 1] + d[:, 3], g[:, 1] + g[:, 3]) - np.maximum(d[:, 1], g[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = d[:, 2] * d[:, 3] + g[:, 2] * g[:, 3] - inter
    return np.where(inter > 0, inter / union, 0.0)
