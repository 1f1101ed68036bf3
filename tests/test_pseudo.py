"""The pseudo-labelling chain: convert, merge, dedup (with the original's defects fixed) and a
resumable self-label run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    with pytest.raises(DecolaError, match="image ids are not in the image info"):
        convert(bad, info, tmp_path / "x.json")
    bad.write_text(
        json.dumps([{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 1}])
    )
    with pytest.raises(DecolaError, match="category ids not in the image info"):
        convert(bad, info, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


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


def test_outputs_are_atomic_and_inputs_protected(tmp_path: Path, monkeypatch) -> None:
    preds = tmp_path / "preds.json"
    preds.write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "score": 0.5}] * 10)
    )
    out = tmp_path / "p.json"
    convert(preds, image_info(tmp_path), out)
    before = out.read_bytes()
    import decola_core.pseudo.annotations as annotations

    def broken(*args, **kwargs):
        yield b"{}"
        raise OSError("disk full")

    monkeypatch.setattr(annotations, "_annotation_chunks", broken)
    with pytest.raises(OSError, match="disk full"):
        dedup(out, tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["info.json", "p.json", "p.json.decola.npz", "preds.json"]
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
    sidecar = tmp_path / "p.json.decola.npz"
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


def decola(*args: str) -> list[str]:
    return [sys.executable, "-m", "decola_cli.main", *args]


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
    return decola(
        "self-label",
        "--config",
        "toy/DECOLA_PHASE1_Toy",
        "--weights",
        str(weights),
        "--dataset",
        "toy_image_labels",
        "--min-sizes",
        "96",
        "128",
        "--output",
        str(output),
        "--data-root",
        str(data_root),
        "--shard-images",
        "8",
        "--postprocess",
    )


def test_self_label_killed_and_resumed_is_byte_identical(tmp_path: Path, toy_phase1) -> None:
    data_root, weights = toy_phase1
    full = subprocess.run(
        self_label_args(data_root, weights, tmp_path / "full"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert full.returncode == 0, full.stderr
    assert "--pseudo-labels" in full.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        self_label_args(data_root, weights, out),
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
    resumed = subprocess.run(
        self_label_args(data_root, weights, out), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
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
    changed = subprocess.run(
        self_label_args(data_root, weights, out)[:-1] + ["--max-size", "200"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert changed.returncode == 2 and "other settings" in changed.stderr


def test_vectorised_nms_equals_torchvision_per_group() -> None:
    import torch
    from torchvision.ops import nms

    rng = np.random.default_rng(0)
    n = 3000
    image = rng.integers(0, 400, n)
    cat = rng.integers(0, 3, n)
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(5, 30, (n, 2))
    boxes = BoxColumns(
        image, cat, np.concatenate([xy, wh], 1), rng.random(n), np.zeros(n, np.int64)
    )
    for threshold in (0.3, 0.9):
        expected = []
        for key in set(zip(image.tolist(), cat.tolist(), strict=True)):
            idx = np.nonzero((image == key[0]) & (cat == key[1]))[0]
            xyxy = boxes.bbox[idx].copy()
            xyxy[:, 2:] += xyxy[:, :2]
            kept = nms(torch.from_numpy(xyxy), torch.from_numpy(boxes.score[idx]), threshold)
            expected += idx[kept.numpy()].tolist()
        assert nms_keep(boxes, threshold).tolist() == sorted(expected)


def test_phase2_offline_trains_on_the_deduplicated_file(tmp_path: Path, toy_phase1) -> None:
    data_root, weights = toy_phase1
    labelled = subprocess.run(
        self_label_args(data_root, weights, tmp_path / "pseudo"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert labelled.returncode == 0, labelled.stderr
    trained = subprocess.run(
        decola(
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
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr
    assert "pseudo_labels: 64 images (box" in trained.stderr
