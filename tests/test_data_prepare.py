"""``decola data``: LVIS-base, ImageNet-LVIS image info, and the unreadable-image check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decola_core.data.lvis import LvisDataset
from decola_core.data.prepare import (
    check_images,
    prepare_imagenet_lvis,
    prepare_lvis_base,
    skip_list_path,
)
from decola_core.errors import DatasetError

CATEGORIES = [
    {"id": 1, "name": "cola", "synset": "cola.n.02", "frequency": "f"},
    {"id": 2, "name": "fork", "synset": "fork.n.01", "frequency": "r"},
    {"id": 3, "name": "table", "synset": "table.n.02", "frequency": "c"},
    {"id": 4, "name": "yak", "synset": "yak.n.02", "frequency": "r"},
]


def write_png(path: Path, width: int, height: int, orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.full((height, width, 3), 120, np.uint8))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, format="JPEG" if path.suffix == ".jpg" else "PNG", exif=exif.tobytes())


def lvis_file(path: Path, images: int = 3) -> Path:
    annotations = [  # image 1: cola + fork, image 2: only fork and yak (rare), image 3: table
        (1, 1), (1, 2), (2, 2), (2, 4), (2, 4), (3, 3),
    ]  # fmt: skip
    data = {
        "info": {"description": "tiny"},
        "categories": CATEGORIES,
        "images": [
            {"id": i, "file_name": f"img{i}.png", "width": 40, "height": 30}
            for i in range(1, images + 1)
        ],
        "annotations": [
            {"id": k + 1, "image_id": i, "category_id": c, "bbox": [1, 2, 10, 10], "area": 100}
            for k, (i, c) in enumerate(annotations)
        ],
    }
    path.write_text(json.dumps(data))
    return path


def test_lvis_base_drops_rare_boxes_and_keeps_images_and_categories(decola, tmp_path: Path) -> None:
    source = lvis_file(tmp_path / "lvis_v1_train.json")
    before = source.read_bytes()
    report = prepare_lvis_base(source, tmp_path / "lvis_v1_train_norare.json")
    assert (report.kept, report.removed, report.images, report.rare_categories) == (2, 4, 3, 2)
    out = json.loads((tmp_path / "lvis_v1_train_norare.json").read_text())
    assert [a["category_id"] for a in out["annotations"]] == [1, 3]
    assert out["categories"] == CATEGORIES and len(out["images"]) == 3  # image 2 stays, empty
    assert source.read_bytes() == before
    with pytest.raises(Exception, match="refusing to overwrite"):
        prepare_lvis_base(source, source)

    result = decola("data", "prepare-lvis-base", str(source))
    assert result.returncode == 0, result.stderr
    assert "removed 4 boxes of 2 rare categories" in result.stderr
    assert json.loads((tmp_path / "lvis_v1_train_norare.json").read_text()) == out


def test_imagenet_lvis_image_info_from_folders(tmp_path: Path) -> None:
    root = tmp_path / "ImageNet-LVIS"
    write_png(root / "n03383948" / "b.png", 50, 20)
    write_png(root / "n03383948" / "a.jpg", 60, 40, orientation=6)  # shown rotated: 40 x 60
    write_png(root / "n04379243" / "c.png", 30, 30)
    write_png(root / "n99999999" / "d.png", 30, 30)  # synset not in LVIS: skipped
    (root / "n04379243" / "notes.txt").write_text("not an image")
    synsets = tmp_path / "wnids.txt"
    synsets.write_text("n03383948\tfork.n.01\nn04379243 table.n.02\nn99999999 nothing.n.01\n")
    lvis = lvis_file(tmp_path / "lvis_v1_val.json")
    counts = prepare_imagenet_lvis(root, lvis, tmp_path / "info.json", synset_map=synsets)
    assert counts == {"images": 3, "classes": 2, "skipped_folders": 1}
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["annotations"] == []
    assert [(i["id"], i["file_name"], i["pos_category_ids"], i["width"], i["height"])
            for i in info["images"]] == [
        (1, "n03383948/a.jpg", [2], 40, 60),
        (2, "n03383948/b.png", [2], 50, 20),
        (3, "n04379243/c.png", [3], 30, 30),
    ]  # fmt: skip
    assert {c["id"]: c["image_count"] for c in info["categories"]} == {1: 0, 2: 2, 3: 1, 4: 0}

    dataset = LvisDataset(tmp_path / "info.json", root)  # the loaders read it as image labels
    assert [r.image_labels.tolist() for r in dataset.records] == [[1], [1], [2]]

    with pytest.raises(DatasetError, match="expected 'wnid synset'"):
        (tmp_path / "bad.txt").write_text("n03383948\n")
        prepare_imagenet_lvis(root, lvis, tmp_path / "x.json", synset_map=tmp_path / "bad.txt")


def test_check_lists_corrupt_and_missing_images_and_loaders_skip_them(tmp_path: Path) -> None:
    ann = lvis_file(tmp_path / "train.json", images=4)
    images = tmp_path / "images"
    write_png(images / "img1.png", 40, 30)
    write_png(images / "img3.png", 40, 30)
    (images / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt
    # img4.png is missing
    bad = check_images(ann, images, workers=2)
    assert [(image_id, reason.split(" ")[0]) for image_id, _, reason in bad] == [
        (2, "unreadable"),
        (4, "missing"),
    ]
    listed = skip_list_path(ann).read_text()
    assert "img2.png" in listed and "img4.png" in listed
    dataset = LvisDataset(ann, images)
    assert dataset.image_ids.tolist() == [1, 3]
    assert sum(len(r.boxes) for r in dataset.records) == 3  # image 2's boxes left out as well

    write_png(images / "img2.png", 40, 30)
    write_png(images / "img4.png", 40, 30)
    assert check_images(ann, images) == []
    assert not skip_list_path(ann).exists()
    assert LvisDataset(ann, images).image_ids.tolist() == [1, 2, 3, 4]
