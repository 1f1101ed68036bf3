"""CenterNet2 training: the EfficientDet resize-crop, polygon targets through the data
pipeline, the warmup-cosine schedule, the pseudo-label mix, and every shipped C2 recipe
training on generated LVIS-format data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decola_core.config import load_recipe
from decola_core.config.loader import list_recipes
from decola_core.config.shorthand import recipe_for
from decola_core.data.loader import TrainData
from decola_core.data.lvis import LvisDataset
from decola_core.data.transforms import (
    EfficientDetResizeCrop,
    RandomFlip,
    Sample,
    build_train_augmentation,
)
from decola_core.engine.run import prepare_recipe, run_training
from decola_core.engine.solver import lr_factor
from decola_core.errors import ConfigError
from decola_core.jobs import TrainJob
from decola_core.structures.masks import polygon_masks

NUM_CLASSES = 1203
C2_RECIPES = [
    name
    for name in list_recipes()
    if not name.startswith("toy/") and load_recipe(name).model.architecture == "centernet2"
]


def _polygon(box: list[float], points: int = 12) -> list[float]:
    """An ellipse inscribed in an xywh box, as a flat COCO polygon."""
    x, y, w, h = box
    angles = np.arange(points) * 2 * math.pi / points
    ring = np.stack([x + w / 2 + w / 2 * np.cos(angles), y + h / 2 + h / 2 * np.sin(angles)], 1)
    return [round(float(v), 2) for v in ring.reshape(-1)]


def _write_images(folder: Path, count: int, rng: np.random.Generator) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(count):
        h, w = int(rng.integers(48, 80)), int(rng.integers(48, 80))
        name = f"img_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    return images


def _boxes_for(images: list[dict], rng: np.random.Generator, polygons: bool) -> list[dict]:
    anns = []
    for img in images:
        for _ in range(int(rng.integers(1, 3))):
            w, h = (
                float(rng.uniform(12, img["width"] / 2)),
                float(rng.uniform(12, img["height"] / 2)),
            )
            x, y = float(rng.uniform(0, img["width"] - w)), float(rng.uniform(0, img["height"] - h))
            ann = {
                "id": len(anns) + 1,
                "image_id": img["id"],
                "category_id": int(rng.integers(1, NUM_CLASSES + 1)),
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if polygons:
                ann["segmentation"] = [_polygon([x, y, w, h])]
            else:
                ann["score"] = float(rng.uniform(0.3, 1.0))
            anns.append(ann)
    return anns


@pytest.fixture(scope="module")
def lvis_like(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, pseudo-label file): LVIS-format boxes with polygons, ImageNet-style image
    labels, and a pseudo-label file on those images (boxes with scores, no masks), with the
    1203-class metadata the recipes read (random embeddings)."""
    root = tmp_path_factory.mktemp("lvis_like")
    rng = np.random.default_rng(0)
    categories = [
        {"id": i + 1, "name": f"class_{i}", "frequency": "rcf"[i % 3], "image_count": 1 + i % 7}
        for i in range(NUM_CLASSES)
    ]
    (root / "metadata").mkdir()
    np.save(
        root / "metadata" / "lvis_v1_clip_a+cname.npy",
        rng.normal(size=(NUM_CLASSES, 512)).astype(np.float16),
    )
    (root / "metadata" / "lvis_v1_train_cat_info.json").write_text(json.dumps(categories))
    lvis_images = _write_images(root / "coco", 6, rng)
    lvis = {
        "images": lvis_images,
        "annotations": _boxes_for(lvis_images, rng, polygons=True),
        "categories": categories,
    }
    (root / "lvis").mkdir()
    (root / "lvis" / "lvis_v1_train.json").write_text(json.dumps(lvis))
    imagenet_images = _write_images(root / "imagenet" / "ImageNet-LVIS", 6, rng)
    for img in imagenet_images:
        img["pos_category_ids"] = [int(rng.integers(1, NUM_CLASSES + 1))]
    (root / "imagenet" / "annotations").mkdir(parents=True)
    info = {"images": imagenet_images, "annotations": [], "categories": categories}
    (root / "imagenet" / "annotations" / "imagenet_lvis_image_info.json").write_text(
        json.dumps(info)
    )
    pseudo = dict(info, annotations=_boxes_for(imagenet_images, rng, polygons=False))
    pseudo_file = root / "pseudo.json"
    pseudo_file.write_text(json.dumps(pseudo))
    return root, pseudo_file


def small_inputs(name: str) -> list[str]:
    """Overrides that keep a released C2 recipe's architecture but feed it 64-pixel crops,
    one image per batch and set."""
    recipe = load_recipe(name)
    overrides = [
        "model.weights=",
        "solver.ims_per_batch=1",
        "data.train_size=64",
        "logging.period=1",
    ]
    for i in range(len(recipe.data.train)):
        overrides += [f"data.train.{i}.batch_size=1", f"data.train.{i}.input_size=64"]
    return overrides


# --------------------------------------------------------------------------------- transforms


def test_efficientdet_resize_crop_maps_boxes_and_polygons_like_the_image() -> None:
    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.integers(0, 256, (3, 90, 120), dtype=np.uint8))
    boxes = np.array([[10.0, 20.0, 70.0, 80.0]])
    polygon = np.array([10.0, 20.0, 70.0, 20.0, 70.0, 80.0, 10.0, 80.0])  # the box outline
    aug = EfficientDetResizeCrop(64, (1.5, 2.0))
    out = aug(Sample(image, boxes, [[polygon]]), np.random.default_rng(5))
    draws = np.random.default_rng(5)
    target = draws.uniform(1.5, 2.0) * 64
    k = min(target / 90, target / 120)
    sh, sw = int(90 * k), int(120 * k)
    oy = int(max(0, sh - 64) * draws.uniform(0, 1))
    ox = int(max(0, sw - 64) * draws.uniform(0, 1))
    assert out.image.shape == (3, min(sh, 64), min(sw, 64))
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((sw, sh), Image.BILINEAR)
    expected = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
    assert torch.equal(out.image, expected[:, oy : oy + 64, ox : ox + 64])
    np.testing.assert_allclose(out.boxes, boxes * k - np.array([ox, oy, ox, oy]))
    mapped = out.polygons[0][0]
    np.testing.assert_allclose(
        [mapped[0::2].min(), mapped[1::2].min(), mapped[0::2].max(), mapped[1::2].max()],
        out.boxes[0],
    )  # the polygon moved with its box (and is not clipped)
    small = EfficientDetResizeCrop(64, (0.5, 0.5))(Sample(image, boxes), np.random.default_rng(0))
    assert max(small.image.shape[1:]) == 32  # smaller than the crop: not padded


def test_horizontal_flip_mirrors_polygons() -> None:
    image = torch.zeros(3, 10, 20, dtype=torch.uint8)
    out = RandomFlip(prob=1.0)(
        Sample(
            image, np.array([[2.0, 1.0, 5.0, 4.0]]), [[np.array([2.0, 1.0, 5.0, 1.0, 5.0, 4.0])]]
        ),
        np.random.default_rng(0),
    )
    assert out.boxes.tolist() == [[15.0, 1.0, 18.0, 4.0]]
    assert out.polygons[0][0].tolist() == [18.0, 1.0, 15.0, 1.0, 15.0, 4.0]


def test_per_dataset_sizes_and_scales_of_a_c2_mix() -> None:
    recipe = load_recipe("DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x+Detic")
    steps = [build_train_augmentation(recipe.data, d).steps for d in recipe.data.train]
    assert [(s[0].size, s[0].scale) for s in steps] == [
        (640, (0.1, 2.0)),
        (320, (0.5, 1.5)),
        (320, (0.5, 1.5)),
    ]
    assert all(isinstance(s[1], RandomFlip) for s in steps)
    swin = load_recipe("BoxSup-C2_Lbase_CLIP_SwinB_896b32_4x")
    assert build_train_augmentation(swin.data).steps[0].size == 896
    bad = load_recipe("BoxSup-C2_Lbase_CLIP_R5021k_640b64_4x", ["data.scale_range=[2.0, 1.0]"])
    with pytest.raises(ConfigError, match="scale range"):
        build_train_augmentation(bad.data)


# ---------------------------------------------------------------------------------- data


def test_polygons_are_read_per_box_and_only_when_every_box_has_one(tmp_path, caplog) -> None:
    images = [{"id": 1, "file_name": "a.jpg", "height": 50, "width": 60},
              {"id": 2, "file_name": "b.jpg", "height": 50, "width": 60}]  # fmt: skip
    square = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
         "segmentation": [square, [40.0, 40.0, 45.0, 40.0, 45.0, 45.0], [1.0, 2.0]]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5],
         "segmentation": [[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]]},
    ]  # fmt: skip
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]}))
    data = LvisDataset(path, tmp_path, with_polygons=True)
    first = data.record(0).polygons
    assert [[p.tolist() for p in inst] for inst in first] == [
        [square, [40.0, 40.0, 45.0, 40.0, 45.0, 45.0]],  # a 2-point polygon is dropped
        [[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]],
    ]
    assert data.record(1).polygons is None  # no box: no masks (as detectron2)
    assert LvisDataset(path, tmp_path).record(0).polygons is None  # not asked for
    del anns[1]["segmentation"]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]}))
    with caplog.at_level("WARNING"):
        assert LvisDataset(path, tmp_path, with_polygons=True).record(0).polygons is None
    assert "1 of 2 boxes have no polygon segmentation" in caplog.text
    masks = polygon_masks(first, 50, 60)
    assert masks.shape == (2, 50, 60) and masks[0, 20, 20] and masks[0, 42, 43]
    assert not masks[0, 35, 35]


def test_pseudo_labels_replace_both_entries_of_a_detic_mix(lvis_like) -> None:
    root, pseudo = lvis_like
    recipe = load_recipe("DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x+Detic")
    job = TrainJob(recipe=recipe, data_root=root, pseudo_labels=str(pseudo))
    train = prepare_recipe(job).data.train
    assert [(d.name, d.ann_type, d.ratio) for d in train] == [
        ("lvis_v1_train_norare", "box", 1.0),
        ("pseudo_labels", "box", 2.0),
        ("pseudo_labels", "image", 2.0),
    ]
    data = TrainData(prepare_recipe(job), root, with_polygons=True)
    assert [ds.has_polygons for ds in data.datasets] == [True, False, False]  # pseudo: no masks
    lvis_index = next(
        i
        for i in range(len(data.planner.source_of))
        if data.planner.source_of[i] == 0 and len(data.record(i).boxes)
    )
    sample = data.load(0, lvis_index)
    assert sample.polygons is not None and len(sample.polygons) == len(sample.labels)
    single = load_recipe("DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x")
    replaced = prepare_recipe(TrainJob(recipe=single, data_root=root, pseudo_labels=str(pseudo)))
    assert [(d.name, d.ann_type) for d in replaced.data.train][1] == ("pseudo_labels", "box")


def test_detector_shorthand_selects_the_c2_recipes() -> None:
    assert recipe_for(phase=2, detector="c2+detic") == (
        "DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x+Detic"
    )
    assert recipe_for(phase=2, dataset="lvis", backbone="swin-b", detector="c2") == (
        "DECOLA_C2_LI_CLIP_SwinB_896b32_ft4x"
    )
    assert recipe_for(baseline="boxsup", detector="c2") == "BoxSup-C2_Lbase_CLIP_R5021k_640b64_4x"
    assert recipe_for(baseline="detic", dataset="lvis", backbone="swin-b", detector="c2") == (
        "c2/Detic_LI_CLIP_SwinB_896b32_4x_ft4x_max-size"
    )
    assert recipe_for(baseline="boxsup", dataset="toy", detector="c2") == "toy/BoxSup-C2_Toy"
    with pytest.raises(ConfigError, match="phase 1 is a Deformable-DETR model"):
        recipe_for(phase=1, detector="c2")
    with pytest.raises(ConfigError, match="available backbones: r50-21k"):
        recipe_for(phase=2, backbone="swin-b", detector="c2")  # only the +Detic one exists


# -------------------------------------------------------------------------------- solver


def test_warmup_cosine_is_detectron2s_warmup_param_scheduler() -> None:
    """Linear from warmup_factor x cosine(0) to cosine(end of warmup), then the cosine."""
    solver = load_recipe("BoxSup-C2_Lbase_CLIP_R5021k_640b64_4x").solver
    assert (solver.optimizer, solver.lr_scheduler, solver.clip_gradients.type) == (
        "adamw",
        "cosine",
        "value",
    )
    factor = lr_factor(solver, solver.max_iter)
    warm, total, start = solver.warmup_iters, solver.max_iter, solver.warmup_factor
    end = 0.5 * (1 + math.cos(math.pi * warm / total))
    for it in (0, 1, warm // 2, warm - 1):
        assert factor(it) == pytest.approx(start + (end - start) * it / warm, rel=1e-12)
    for it in (warm, total // 2, total - 1):
        assert factor(it) == pytest.approx(0.5 * (1 + math.cos(math.pi * it / total)), rel=1e-12)
    multistep = load_recipe("DECOLA_PHASE1_Lbase_CLIP_R5021k_4x").solver
    steps = lr_factor(multistep, multistep.max_iter)
    assert steps(0) == pytest.approx(multistep.warmup_factor) or multistep.warmup_iters == 0


# ------------------------------------------------------------------------- every recipe


@pytest.mark.parametrize("name", C2_RECIPES)
def test_every_shipped_c2_recipe_trains_two_iterations(lvis_like, tmp_path, name: str) -> None:
    """Each released C2 architecture and data mix, fed 64-pixel crops: two finite steps on
    generated LVIS boxes with polygons and (DECOLA C2) a generated pseudo-label file."""
    root, pseudo = lvis_like
    recipe = load_recipe(name, small_inputs(name))
    uses_pseudo = name.startswith("DECOLA_C2")
    job = TrainJob(
        recipe=recipe,
        output_dir=tmp_path / "run",
        data_root=root,
        max_iter=2,
        num_workers=0,
        pseudo_labels=str(pseudo) if uses_pseudo else None,
    )
    final = run_training(job)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert final is not None and final.is_file() and [r["iter"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["total_loss"]) and row["skipped_steps"] == 0
        assert {"loss_mask", "loss_centernet_loc", "loss_cls_stage2"} <= set(row)
        assert ("image_loss_stage0" in row) == recipe.model.with_image_labels
        if len(recipe.data.train) == 1:  # LVIS batches only: their polygons train the mask head
            assert row["loss_mask"] > 0
    shutil.rmtree(tmp_path / "run")  # the released architectures' checkpoints are large


def test_the_seed_command_fine_tunes_a_boxsup_c2_model_on_dedup_output(
    decola, lvis_like, tmp_path
) -> None:
    """``decola train --config DECOLA_C2_..+Detic --weights <BoxSup-C2> --pseudo-labels F``:
    the BoxSup-C2 weights load, and the file feeds the box and the image-label entries."""
    root, pseudo = lvis_like
    boxsup = "BoxSup-C2_Lbase_CLIP_R5021k_640b64_4x"
    first = run_training(
        TrainJob(
            recipe=load_recipe(boxsup, small_inputs(boxsup)),
            output_dir=tmp_path / "boxsup",
            data_root=root,
            max_iter=1,
            num_workers=0,
        )
    )
    name = "DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x+Detic"
    overrides = [arg for o in small_inputs(name) if o != "model.weights=" for arg in ("--set", o)]
    result = decola(
        "train", "--config", name, "--weights", str(first), "--pseudo-labels", str(pseudo),
        "--data-root", str(root), "--output-dir", str(tmp_path / "decola_c2"), "--max-iter", "2",
        "--offline", *overrides,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"initial weights {first}" in result.stderr
    assert "pseudo_labels: 6 images (box, 1 per batch)" in result.stderr
    assert "pseudo_labels: 6 images (image, 1 per batch)" in result.stderr
    assert (tmp_path / "decola_c2" / "model_final.pth").is_file()
