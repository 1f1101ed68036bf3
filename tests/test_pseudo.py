"""The pseudo-labelling chain: convert, merge, dedup (with the original's defects fixed) and a
resumable self-label run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from decola_core.errors import DecolaError
from decola_core.pseudo.annotations import BoxColumns, PseudoFile
from decola_core.pseudo.postprocess import convert, dedup, merge, nms_keep


def columns(rows) -> BoxColumns:
    image, cat, x, y, w, h, score = (np.array(c) for c in zip(*rows, strict=True))
    return BoxColumns(
        image.astype(np.int64),
        cat.astype(np.int64),
        np.stack([x, y, w, h], 1).astype(np.float64),
        score.astype(np.float64),
        np.zeros(len(rows), np.int64),
    )


def test_nms_works_on_corner_boxes_not_raw_xywh() -> None:
    # two near-identical boxes (IoU 0.96) far from the origin: NMS on corners removes one.
    # Read as corners, the raw xywh values [100, 100, 50, 50] would be an inverted (empty) box,
    # so the original kept both duplicates.
    boxes = columns([(1, 1, 100, 100, 50, 50, 0.9), (1, 1, 101, 100, 50, 50, 0.8)])
    assert nms_keep(boxes, 0.9).tolist() == [0]
    import torch
    from torchvision.ops import nms

    raw = nms(torch.from_numpy(boxes.bbox), torch.from_numpy(boxes.score), 0.9)
    assert raw.tolist() == [0, 1]  # the original's behaviour: the duplicate survives


def test_class_aware_and_class_agnostic() -> None:
    boxes = columns(
        [(1, 1, 0, 0, 10, 10, 0.9), (1, 2, 0, 0, 10, 10, 0.8), (2, 1, 0, 0, 10, 10, 0.7)]
    )
    assert nms_keep(boxes, 0.5, class_aware=True).tolist() == [0, 1, 2]
    assert nms_keep(boxes, 0.5, class_aware=False).tolist() == [0, 2]  # other images untouched


def image_info(tmp_path: Path, name: str = "info.json", images: int = 3) -> Path:
    info = {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "height": 50, "width": 60, "pos_category_ids": [1]}
            for i in range(1, images + 1)
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [],
    }
    path = tmp_path / name
    path.write_text(json.dumps(info))
    return path


def test_convert_validates_and_writes_unique_ids(tmp_path: Path) -> None:
    info = image_info(tmp_path)
    shards = tmp_path / "minsize_240"
    shards.mkdir()
    (shards / "shard_00000.jsonl").write_text(
        json.dumps({"image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5})
        + "\n"
        + json.dumps({"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.1})
        + "\n"
    )
    out = tmp_path / "p.json"
    assert convert(shards, info, out) == 2
    data = json.loads(out.read_text())
    assert [a["id"] for a in data["annotations"]] == [1, 2]
    assert [a["image_id"] for a in data["annotations"]] == [1, 2]  # sorted by image
    assert data["annotations"][1]["bbox"] == [1, 2, 3, 4] and data["annotations"][1]["score"] == 0.5
    assert data["info"]["min_size"] == 240 and len(data["images"]) == 3
    assert convert(shards, info, tmp_path / "hi.json", min_score=0.3) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps([{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    )
    with pytest.raises(DecolaError, match="image ids that are not in"):
        convert(bad, info, tmp_path / "x.json")
    bad.write_text(
        json.dumps([{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 1}])
    )
    with pytest.raises(DecolaError, match="category ids that are not in"):
        convert(bad, info, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_convert_caches_the_image_info_and_notices_changes(tmp_path: Path) -> None:
    info = image_info(tmp_path, images=3)
    preds = tmp_path / "preds.json"
    preds.write_text(
        json.dumps([{"image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.5}])
    )
    cache = tmp_path / "cache"
    convert(preds, info, tmp_path / "a.json", cache_dir=cache)
    assert len(list(cache.rglob("*.npy"))) == 1
    convert(preds, info, tmp_path / "b.json", cache_dir=cache)  # served from the cache
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    assert convert(preds, info, tmp_path / "d.json", cache_dir=blocked) == 1  # cache optional
    image_info(tmp_path, images=2)  # the file changes: image 3 is gone
    with pytest.raises(DecolaError, match="image ids that are not in"):
        convert(preds, info, tmp_path / "c.json", cache_dir=cache)


def test_merge_renumbers_records_inputs_and_refuses_mismatches(tmp_path: Path) -> None:
    files = []
    for size in (240, 280):
        preds = tmp_path / f"minsize_{size}.json"
        preds.write_text(
            json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "score": 0.5}])
        )
        files.append(tmp_path / f"p{size}.json")
        convert(preds, image_info(tmp_path), files[-1])
    merged = tmp_path / "merged.json"
    assert merge(files, merged) == 2
    data = json.loads(merged.read_text())
    assert [a["id"] for a in data["annotations"]] == [1, 2]
    assert [s["min_size"] for s in data["info"]["merged_from"]] == [240, 280]
    report = dedup(merged, tmp_path / "final.json")
    assert (report.before, report.after) == (2, 1)
    assert report.per_source == {"min size 240": (1, 1), "min size 280": (1, 0)}
    other = tmp_path / "other.json"
    convert(tmp_path / "minsize_240.json", image_info(tmp_path, "info2.json", images=5), other)
    with pytest.raises(DecolaError, match="different image set"):
        merge([files[0], other], tmp_path / "m2.json")
    assert merge([files[0], other], tmp_path / "m2.json", allow_mismatch=True) == 2
    assert len(json.loads((tmp_path / "m2.json").read_text())["images"]) == 5


def test_merge_orders_boxes_by_image_keeping_the_input_order(tmp_path: Path) -> None:
    files = []
    for size, images in ((240, [3, 1, 2]), (280, [2, 3])):
        preds = tmp_path / f"minsize_{size}.json"
        preds.write_text(
            json.dumps(
                [
                    {"image_id": i, "category_id": 1, "bbox": [0, 0, size, i], "score": 0.5}
                    for i in images
                ]
            )
        )
        files.append(tmp_path / f"p{size}.json")
        convert(preds, image_info(tmp_path), files[-1])
    merge(files, tmp_path / "m.json")
    merged = json.loads((tmp_path / "m.json").read_text())["annotations"]
    assert [(a["image_id"], a["source"], a["bbox"][2]) for a in merged] == [
        (1, 0, 240),
        (2, 0, 240),
        (2, 1, 280),
        (3, 0, 240),
        (3, 1, 280),
    ]


def test_dedup_copies_kept_records_with_their_ids(tmp_path: Path, monkeypatch) -> None:
    import decola_core.pseudo.records as records

    monkeypatch.setattr(records, "COPY_WINDOW", 300)  # the input is copied in many windows
    rng = np.random.default_rng(3)
    preds = tmp_path / "minsize_240.json"
    boxes = rng.uniform(0, 20, (60, 4)).round(1).tolist()
    preds.write_text(
        json.dumps(
            [
                {"image_id": i % 3 + 1, "category_id": 1, "bbox": box, "score": i / 60}
                for i, box in enumerate(boxes)
            ]
        )
    )
    merged = tmp_path / "merged.json"
    convert(preds, image_info(tmp_path), tmp_path / "p.json")
    merge([tmp_path / "p.json"], merged)
    report = dedup(merged, tmp_path / "copied.json", iou_threshold=0.3)
    assert 0 < report.after < report.before == 60
    copied = json.loads((tmp_path / "copied.json").read_text())["annotations"]
    by_id = {a["id"]: a for a in json.loads(merged.read_text())["annotations"]}
    assert [by_id[a["id"]] for a in copied] == copied  # verbatim, ids kept
    (tmp_path / "merged.json.decola.npy").unlink()  # no sidecar: records formatted anew
    dedup(merged, tmp_path / "formatted.json", iou_threshold=0.3)
    formatted = (tmp_path / "formatted.json").read_bytes()
    assert formatted == (tmp_path / "copied.json").read_bytes()  # the same, ids included
    assert not (tmp_path / "copied.json.decola.npy").exists()  # the chain's end: no sidecar
    again = PseudoFile.load(tmp_path / "copied.json")
    assert again.boxes.record_id.tolist() == [a["id"] for a in copied]
    assert np.array_equal(again.boxes.bbox, np.array([a["bbox"] for a in copied]))
    dedup(tmp_path / "copied.json", tmp_path / "twice.json", iou_threshold=0.3)
    assert json.loads((tmp_path / "twice.json").read_text())["annotations"] == copied


def test_forked_formatters_write_the_same_bytes(tmp_path: Path, monkeypatch) -> None:
    import decola_core.pseudo.records as records

    rng = np.random.default_rng(1)
    n = 1000
    boxes = BoxColumns(
        rng.integers(1, 50, n),
        rng.integers(1, 9, n),
        rng.uniform(0, 300, (n, 4)),
        rng.random(n),
        rng.integers(0, 5, n),
    )
    monkeypatch.setattr(records, "CHUNK_BOXES", 128)  # 8 chunks
    written = {}
    for workers in (1, 3):
        path = tmp_path / f"{workers}.txt"
        with open(path, "wb") as out:
            out.write(b"[")
            lengths = records.write_formatted(out, boxes, workers=workers)
            out.write(b"]")
        written[workers] = (path.read_bytes(), lengths)
    (serial, serial_lengths), (forked, forked_lengths) = written[1], written[3]
    assert forked == serial and np.array_equal(forked_lengths, serial_lengths)
    starts = 1 + np.r_[0, np.cumsum(serial_lengths + 1)[:-1]]
    assert json.loads(serial[starts[7] : starts[7] + serial_lengths[7]])["id"] == 8
    parsed = json.loads(serial)
    assert [r["id"] for r in parsed] == list(range(1, n + 1))
    assert parsed[5]["bbox"] == boxes.bbox[5].tolist()
    assert set(parsed[5]) == {"id", "image_id", "category_id", "bbox", "score", "source"}


def test_a_failing_forked_writer_leaves_no_output(tmp_path: Path, monkeypatch) -> None:
    import decola_core.pseudo.records as records

    preds = tmp_path / "preds.json"
    preds.write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "score": 0.5}] * 500)
    )
    convert(preds, image_info(tmp_path), tmp_path / "p.json")
    monkeypatch.setattr(records, "CHUNK_BOXES", 64)
    monkeypatch.setattr(records, "formatting_workers", lambda n: 2)

    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "pwrite", disk_full)  # inherited by the forked workers
    with pytest.raises(OSError, match="disk full"):
        merge([tmp_path / "p.json"], tmp_path / "m.json")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("m", "."))) == []


def test_outputs_are_atomic_and_inputs_protected(tmp_path: Path, monkeypatch) -> None:
    preds = tmp_path / "preds.json"
    preds.write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "score": 0.5}] * 10)
    )
    out = tmp_path / "p.json"
    convert(preds, image_info(tmp_path), out)
    before = out.read_bytes()
    import decola_core.pseudo.annotations as annotations

    def broken_formatting(out, *args):
        out.write(b"{}")
        raise OSError("disk full")

    def broken_copy(out, *args):
        out.write(b"{}")
        raise OSError("disk full")

    monkeypatch.setattr(annotations, "write_formatted", broken_formatting)
    with pytest.raises(OSError, match="disk full"):
        merge([out], tmp_path / "d.json")  # records formatted
    monkeypatch.setattr(annotations, "copy_records", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        dedup(out, tmp_path / "d.json")  # records copied from the input
    assert not (tmp_path / "d.json").exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["info.json", "p.json", "p.json.decola.npy", "preds.json"]
    monkeypatch.undo()
    with pytest.raises(DecolaError, match="refusing to overwrite the input"):
        dedup(out, out)
    assert out.read_bytes() == before


def test_sidecar_is_used_only_while_the_json_is_unchanged(tmp_path: Path) -> None:
    from decola_core.pseudo.annotations import PseudoFile

    preds = tmp_path / "preds.json"
    preds.write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "score": 0.5}])
    )
    out = tmp_path / "p.json"
    convert(preds, image_info(tmp_path), out)
    sidecar = tmp_path / "p.json.decola.npy"
    assert sidecar.is_file()
    from_sidecar = PseudoFile.load(out)
    sidecar.unlink()
    from_json = PseudoFile.load(out)
    assert np.array_equal(from_sidecar.boxes.bbox, from_json.boxes.bbox)
    assert from_sidecar.images == from_json.images and from_sidecar.info == from_json.info

    convert(preds, image_info(tmp_path), out)  # fresh sidecar, then edit the JSON by hand
    edited = json.loads(out.read_text())
    edited["annotations"][0]["score"] = 0.25
    out.write_text(json.dumps(edited))
    assert PseudoFile.load(out).boxes.score.tolist() == [0.25]  # stale sidecar ignored


@pytest.fixture(scope="module")
def toy_phase1(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("toy")
    data_root = root / "data"
    from decola_core.config import load_recipe
    from decola_core.data.toy import ensure_toy_dataset
    from decola_core.modeling import build_model
    from decola_core.modeling.checkpoint import save_weights

    ensure_toy_dataset(data_root)
    import torch

    torch.manual_seed(0)
    model = build_model(load_recipe("toy/DECOLA_PHASE1_Toy"), data_root=data_root)
    return data_root, save_weights(model, root / "phase1.pth")


def self_label_args(data_root: Path, weights: Path, output: Path) -> list[str]:
    return [
        "self-label",
        "--config",
        "toy/DECOLA_PHASE1_Toy",
        "--weights",
        str(weights),
        "--label-dataset",
        "toy_image_labels",
        "--min-sizes",
        "96",
        "128",
        "--output-dir",
        str(output),
        "--data-root",
        str(data_root),
        "--shard-images",
        "8",
        "--postprocess",
    ]


def test_self_label_killed_and_resumed_is_byte_identical(
    decola, tmp_path: Path, toy_phase1
) -> None:
    data_root, weights = toy_phase1
    full = decola(*self_label_args(data_root, weights, tmp_path / "full"), env={"COLUMNS": "40"})
    assert full.returncode == 0, full.stderr
    assert "--pseudo-labels" in full.stderr
    # the suggested next command is one line, whatever the width: it can be copied and run
    suggested = next(line for line in full.stderr.splitlines() if "--pseudo-labels" in line)
    assert suggested.strip().startswith("decola train --phase 2") and str(weights) in suggested
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        decola.argv(*self_label_args(data_root, weights, out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list(out.glob("minsize_128/shard_*.jsonl"))) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "pseudo_labels.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in out.glob("minsize_*/shard_*.jsonl")}
    total_shards = len(list((tmp_path / "full").glob("minsize_*/shard_*.jsonl")))
    assert 2 <= len(done_before) < total_shards  # the kill landed in the middle of the run
    resumed = decola(*self_label_args(data_root, weights, out))
    assert resumed.returncode == 0, resumed.stderr
    for shard, stamp in done_before.items():  # finished shards were kept, not recomputed
        assert shard.stat().st_mtime_ns == stamp, shard
    for shard in sorted((tmp_path / "full").glob("minsize_*/shard_*.jsonl")):
        assert (out / shard.relative_to(tmp_path / "full")).read_bytes() == shard.read_bytes()
    a = json.loads((out / "pseudo_labels.json").read_text())
    b = json.loads((tmp_path / "full" / "pseudo_labels.json").read_text())
    a.pop("info"), b.pop("info")  # they name their own folders
    assert a == b
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["boxes"] == {"96": 64, "128": 64} and len(manifest["finished_shards"]["96"]) == 8
    )
    final = PseudoFile.load(out / "pseudo_labels.json")
    assert len(final.boxes) <= 128 and set(np.unique(final.boxes.source)) <= {0, 1}
    changed = decola(*self_label_args(data_root, weights, out)[:-1], "--max-size", "200")
    assert changed.returncode == 2 and "other settings" in changed.stderr


@pytest.mark.parametrize(
    ("num_images", "class_aware"), [(400, True), (400, False), (7, False)]
)  # groups of 1-10 boxes, of 3-20, and of hundreds (padded buckets)
def test_vectorised_nms_equals_torchvision_per_group(num_images: int, class_aware: bool) -> None:
    import torch
    from torchvision.ops import nms

    rng = np.random.default_rng(0)
    n = 3000
    image = rng.integers(0, num_images, n)
    cat = rng.integers(0, 3, n)
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(5, 30, (n, 2))
    wh[::50] = 0  # empty boxes: IoU undefined, never suppressed
    boxes = BoxColumns(
        image, cat, np.concatenate([xy, wh], 1), rng.random(n), np.zeros(n, np.int64)
    )
    group = image * 3 + cat if class_aware else image
    for threshold in (0.3, 0.9):
        expected = []
        for key in np.unique(group):
            idx = np.nonzero(group == key)[0]
            xyxy = boxes.bbox[idx].copy()
            xyxy[:, 2:] += xyxy[:, :2]
            kept = nms(torch.from_numpy(xyxy), torch.from_numpy(boxes.score[idx]), threshold)
            expected += idx[kept.numpy()].tolist()
        assert nms_keep(boxes, threshold, class_aware).tolist() == sorted(expected)


def test_phase2_offline_trains_on_the_deduplicated_file(decola, tmp_path: Path, toy_phase1) -> None:
    data_root, weights = toy_phase1
    labelled = decola(*self_label_args(data_root, weights, tmp_path / "pseudo"))
    assert labelled.returncode == 0, labelled.stderr
    trained = decola(
        "train",
        "--phase",
        "2",
        "--dataset",
        "toy",
        "--labels",
        "offline",
        "--pseudo-labels",
        str(tmp_path / "pseudo" / "pseudo_labels.json"),
        "--weights",
        str(weights),
        "--data-root",
        str(data_root),
        "--output-dir",
        str(tmp_path / "run"),
        "--max-iter",
        "2",
    )
    assert trained.returncode == 0, trained.stderr
    assert "pseudo_labels: 64 images (box" in trained.stderr


def test_size_buckets_never_mix_shapes_or_label_counts() -> None:
    import torch

    from decola_core.pseudo.buckets import size_buckets

    shapes = [(64, 80), (80, 64), (64, 80), (64, 80), (72, 72), (80, 64)]
    labels = [[1], [2], [3, 4], [5], [1], [2, 2]]
    images = [torch.zeros(3, h, w) for h, w in shapes]
    buckets = size_buckets(images, [torch.tensor(x) for x in labels])
    assert buckets == [[0, 3], [1, 5], [2], [4]]  # [2, 2] is one distinct label


def test_batched_self_labelling_equals_one_image_at_a_time(
    tmp_path: Path, toy_phase1, monkeypatch
) -> None:
    """Batching by bucket gives every image the boxes it gets alone: no padding, no other
    image's prompts (a union of prompts or padded borders would change them)."""
    from decola_core.config import load_recipe
    from decola_core.jobs import SelfLabelJob
    from decola_core.modeling.decola.model import DecolaDETR
    from decola_core.pseudo.self_label import run_self_label

    data_root, weights = toy_phase1
    calls: list[list[tuple[int, ...]]] = []
    original = DecolaDETR.pseudo_label

    def spy(self, images, image_labels, **kwargs):
        calls.append([tuple(img.shape) for img in images])
        return original(self, images, image_labels, **kwargs)

    monkeypatch.setattr(DecolaDETR, "pseudo_label", spy)
    rows = {}
    for batch in (1, 6):
        job = SelfLabelJob(
            recipe=load_recipe("toy/DECOLA_PHASE1_Toy"),
            weights=weights,
            label_dataset="toy_image_labels",
            min_sizes=[96, 112],
            output_dir=tmp_path / f"batch{batch}",
            data_root=data_root,
            batch_size=batch,
            shard_images=32,
        )
        calls.clear()
        run_self_label(job, progress=False)
        rows[batch] = [
            json.loads(line)
            for path in sorted((tmp_path / f"batch{batch}").glob("minsize_*/shard_*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        if batch > 1:
            assert max(len(c) for c in calls) > 1  # images really ran together
            assert all(len(set(c)) == 1 for c in calls)  # of one shape: nothing padded
    assert len(rows[1]) == len(rows[6]) > 0
    for one, many in zip(rows[1], rows[6], strict=True):
        assert (one["image_id"], one["category_id"]) == (many["image_id"], many["category_id"])
        assert many["bbox"] == pytest.approx(one["bbox"], abs=1e-3)  # pixels
        assert many["score"] == pytest.approx(one["score"], abs=1e-5)
