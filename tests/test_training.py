"""Training: samplers, the toy set, resume after kill -9, bad images, NaN steps, DDP, learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from decola_core.config import load_recipe
from decola_core.data.samplers import (
    BatchPlanner,
    TrainStream,
    multi_dataset_weights,
    repeat_factors,
)
from decola_core.data.toy import ensure_toy_dataset
from decola_core.engine.distributed import DistContext
from decola_core.engine.trainer import Trainer, TrainOptions
from decola_core.errors import DecolaError
from decola_core.modeling import build_model


def metrics_by_iter(path: Path) -> dict[int, dict]:
    records = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        records[record["iter"]] = record  # a resumed run rewrites iterations: keep the last
    return records


def test_stream_is_deterministic_sharded_and_restartable() -> None:
    stream = TrainStream(10, seed=3)
    first = [i for _, i in islice(stream.for_rank(0, 1), 25)]
    assert first == [i for _, i in islice(TrainStream(10, seed=3).for_rank(0, 1), 25)]
    ranks = [[i for _, i in islice(stream.for_rank(r, 2), 15)] for r in range(2)]
    assert [ranks[g % 2][g // 2] for g in range(25)] == first  # rank r owns positions r, r+2, ...
    restarted = list(islice(stream.for_rank(1, 2, start=7), 5))
    assert [p for p, _ in restarted] == [7, 8, 9, 10, 11]
    assert [i for _, i in restarted] == ranks[1][7:12]


def test_repeat_factors_and_multi_dataset_ratios() -> None:
    classes = [np.array([0]), np.array([0]), np.array([0, 1]), np.array([])]
    factors = repeat_factors(classes, threshold=0.5)
    assert factors.tolist() == pytest.approx([1.0, 1.0, np.sqrt(0.5 / 0.25), 1.0])
    weights = multi_dataset_weights([100, 400], [1, 4], [None, None])
    stream = TrainStream(500, seed=0, weights=weights)
    drawn = np.concatenate([stream.epoch(e) for e in range(20)])
    share = (drawn >= 100).mean()
    assert share == pytest.approx(0.8, abs=0.02)  # dataset shares follow the 1:4 ratio


def test_batches_are_single_dataset_single_orientation_and_resume() -> None:
    source = np.repeat([0, 1], [50, 50])
    landscape = np.arange(100) % 3 == 0
    make = lambda: BatchPlanner(TrainStream(100, seed=1), source, landscape, [2, 4])  # noqa: E731
    planner = make()
    batches = [b for _, b in zip(range(30), planner.batches(), strict=False)]
    for src, items in batches:
        assert len(items) == [2, 4][src]
        assert (
            len({int(source[i]) for _, i in items}) == 1
            and len({bool(landscape[i]) for _, i in items}) == 1
        )
    planner = make()
    gen = planner.batches()
    head = [next(gen) for _ in range(10)]
    state = planner.state()
    resumed = make()
    resumed.load_state(json.loads(json.dumps(state)))
    tail = [b for _, b in zip(range(20), resumed.batches(), strict=False)]
    assert [(s, [tuple(x) for x in items]) for s, items in head + tail] == [
        (s, [tuple(x) for x in items]) for s, items in batches
    ]


def test_toy_dataset_is_deterministic(tmp_path: Path) -> None:
    root = ensure_toy_dataset(tmp_path / "a")
    again = ensure_toy_dataset(tmp_path / "b")
    for name in ("annotations/toy_train.json", "toy_clip_a+cname.npy", "images/toy_val_0003.png"):
        assert (root / name).read_bytes() == (again / name).read_bytes()
    train = json.loads((root / "annotations" / "toy_train.json").read_text())
    assert len(train["categories"]) == 8 and {c["frequency"] for c in train["categories"]} == {
        "r",
        "c",
        "f",
    }
    labels = json.loads((root / "annotations" / "toy_image_labels.json").read_text())
    assert labels["annotations"] == [] and all(
        len(i["pos_category_ids"]) == 1 for i in labels["images"]
    )
    embeddings = np.load(root / "toy_clip_a+cname.npy").astype(np.float32)
    norm = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sim = norm @ norm.T
    assert sim[0, 3] > sim[0, 1]  # red square is closer to yellow square than to green circle


def _boxes_overlap(a: list[float], b: list[float]) -> bool:
    return not (
        a[0] >= b[0] + b[2] or b[0] >= a[0] + a[2] or a[1] >= b[1] + b[3] or b[1] >= a[1] + a[3]
    )


@pytest.mark.parametrize("variant", ["toy", "toy_crowded"])
def test_toy_shapes_never_overlap_and_polygons_follow_them(tmp_path: Path, variant: str) -> None:
    from itertools import combinations

    root = ensure_toy_dataset(tmp_path, variant)
    for split in root.glob("annotations/*_val.json"):
        data = json.loads(split.read_text())
        by_image: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
            x, y, w, h = a["bbox"]
            xs, ys = a["segmentation"][0][0::2], a["segmentation"][0][1::2]
            assert min(xs) >= x - 0.01 and max(xs) <= x + w + 0.01
            assert min(ys) >= y - 0.01 and max(ys) <= y + h + 0.01
        for objects in by_image.values():
            for a, b in combinations(objects, 2):
                assert not _boxes_overlap(a["bbox"], b["bbox"])


def test_crowded_toy_set_is_a_base_training_split(tmp_path: Path) -> None:
    """The crowded variant: 16 classes, many shapes per image; like LVIS-base, the rare classes
    have no training boxes (their shapes stay in the pictures) but are annotated in val."""
    from decola_core.data.toy import TOY_CROWDED, variant_of

    root = ensure_toy_dataset(tmp_path, TOY_CROWDED)
    train = json.loads((root / "annotations" / "toy_crowded_train.json").read_text())
    val = json.loads((root / "annotations" / "toy_crowded_val.json").read_text())
    rare = {c["id"] for c in train["categories"] if c["frequency"] == "r"}
    assert len(train["categories"]) == 16 and len(rare) == 4
    assert not rare & {a["category_id"] for a in train["annotations"]}
    assert rare <= {a["category_id"] for a in val["annotations"]}
    assert all(c["image_count"] == 0 for c in train["categories"] if c["id"] in rare)
    per_image = Counter(a["image_id"] for a in val["annotations"])
    assert min(per_image.values()) >= TOY_CROWDED.objects_per_image[0] - 2  # some don't fit
    assert sum(per_image.values()) / len(val["images"]) > 6
    # each rare class shares its colour and its shape with trained classes
    seen = {c["name"] for c in train["categories"] if c["id"] not in rare}
    for c in train["categories"]:
        if c["id"] in rare:
            colour, shape = c["name"].split("_")
            assert any(n.startswith(colour + "_") for n in seen)
            assert any(n.endswith("_" + shape) for n in seen)
    assert np.load(root / "toy_crowded_clip_a+cname.npy").shape == (16, 64)
    assert variant_of("toy_crowded_val") is TOY_CROWDED and variant_of("toy_val").name == "toy"
    assert variant_of("toy_crowded/annotations/x.json") is TOY_CROWDED
    assert variant_of("lvis_v1_val") is None


TOY_PHASE1 = ("--phase", "1", "--dataset", "toy")
TOY_C2 = ("--config", "toy/BoxSup-C2_Toy")


def toy_train_args(data_root: Path, *args: str, recipe: tuple[str, ...] = TOY_PHASE1) -> list[str]:
    """``decola train`` of a toy recipe (default: phase 1), metrics every iteration."""
    return [
        "train",
        *recipe,
        "--data-root",
        str(data_root),
        "--set",
        "logging.period=1",
        *args,
    ]


def train_toy(
    decola,
    *args: str,
    data_root: Path,
    recipe: tuple[str, ...] = TOY_PHASE1,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return decola(*toy_train_args(data_root, *args, recipe=recipe), env=env, timeout=600)


@pytest.mark.parametrize("recipe", [TOY_PHASE1, TOY_C2], ids=["decola-phase1", "centernet2"])
def test_kill_and_resume_reproduces_the_uninterrupted_run(
    decola, tmp_path: Path, recipe: tuple[str, ...]
) -> None:
    data_root = tmp_path / "data"
    run = ("--max-iter", "8", "--checkpoint-period", "3")
    out = tmp_path / "killed"
    full = train_toy(
        decola, "--output-dir", str(tmp_path / "full"), *run, data_root=data_root, recipe=recipe
    )
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(
        decola.argv(*toy_train_args(data_root, "--output-dir", str(out), *run, recipe=recipe)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while (
        not (out / "model_0000003.pth").exists() and time.time() < deadline and proc.poll() is None
    ):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model_final.pth").exists()
    resumed = train_toy(decola, "--output-dir", str(out), *run, data_root=data_root, recipe=recipe)
    assert resumed.returncode == 0, resumed.stderr
    # the second run began at the checkpoint and ran only the remaining steps
    assert f"resuming from {out / 'model_0000003.pth'} at iteration 3" in resumed.stderr
    assert "trained iterations 4-8 (5 steps)" in resumed.stderr
    assert "resuming from" in (out / "log.txt").read_text()
    rows = [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    full_rows = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert rows == [json.loads(line)["iter"] for line in full_rows] == list(range(1, 9))
    a, b = (
        metrics_by_iter(tmp_path / "full" / "metrics.jsonl"),
        metrics_by_iter(out / "metrics.jsonl"),
    )
    for it in range(4, 9):
        for key, value in a[it].items():
            if key not in ("seconds", "images_per_s"):
                assert b[it][key] == value, (it, key)
    assert not list(out.glob(".*.tmp"))  # no half-written files


def toy_trainer(tmp_path: Path, recipe_name: str = "toy/DECOLA_PHASE1_Toy", **options) -> Trainer:
    data_root = tmp_path / "data"
    ensure_toy_dataset(data_root)
    recipe = load_recipe(recipe_name, ["logging.period=1"])
    opts = TrainOptions(output_dir=tmp_path / "out", data_root=data_root, **options)
    opts.output_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(recipe, opts, DistContext(), lambda r: build_model(r, data_root=data_root))


TOY_RECIPES = pytest.mark.parametrize(
    "recipe_name", ["toy/DECOLA_PHASE1_Toy", "toy/BoxSup-C2_Toy"], ids=["decola", "centernet2"]
)


@TOY_RECIPES
def test_unreadable_images_are_skipped_and_counted(tmp_path: Path, recipe_name: str) -> None:
    data_root = tmp_path / "data"
    root = ensure_toy_dataset(data_root)
    for path in sorted((root / "images").glob("toy_train_00[0-3]*.png")):
        path.write_bytes(b"broken")  # 40 of 96 training images
    with pytest.raises(DecolaError, match="unreadable training images"):
        toy_trainer(tmp_path, recipe_name, max_iter=3, max_bad_images=0).run()
    trainer = toy_trainer(tmp_path, recipe_name, max_iter=3, max_bad_images=1000, resume=False)
    trainer.run()
    assert trainer.bad_images > 0
    assert (
        metrics_by_iter(tmp_path / "out" / "metrics.jsonl")[3]["bad_images"] == trainer.bad_images
    )


@TOY_RECIPES
def test_non_finite_losses_skip_the_step(tmp_path: Path, recipe_name: str) -> None:
    trainer = toy_trainer(tmp_path, recipe_name, max_iter=3)
    original = trainer._step_losses
    calls = {"n": 0}

    def poisoned(model, batch, it):
        losses, ids = original(model, batch, it)
        calls["n"] += 1
        if it == 1:
            losses = {k: v * float("nan") for k, v in losses.items()}
        return losses, ids

    trainer._step_losses = poisoned
    trainer.run()
    assert trainer.skipped_steps == 1
    assert metrics_by_iter(tmp_path / "out" / "metrics.jsonl")[3]["skipped_steps"] == 1
    always = toy_trainer(tmp_path / "again", recipe_name, max_iter=20)
    always._step_losses = lambda model, batch, it: ({"loss": torch.tensor(float("inf"))}, [it])
    with pytest.raises(DecolaError, match="not finite for 6 consecutive steps"):
        always.run()


def test_resume_refuses_a_different_recipe(tmp_path: Path) -> None:
    toy_trainer(tmp_path, max_iter=2, checkpoint_period=1).run()
    data_root = tmp_path / "data"
    recipe = load_recipe("toy/DECOLA_PHASE1_Toy", ["logging.period=1", "solver.base_lr=0.001"])
    opts = TrainOptions(output_dir=tmp_path / "out", data_root=data_root, max_iter=3)
    trainer = Trainer(recipe, opts, DistContext(), lambda r: build_model(r, data_root=data_root))
    with pytest.raises(DecolaError, match="different recipe.*solver.base_lr"):
        trainer.run()


def test_learning_rate_groups_and_schedule() -> None:
    from decola_core.engine.solver import lr_factor, param_groups

    recipe = load_recipe("DECOLA_PHASE1_Lbase_CLIP_R5021k_4x")
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(2, 2)
    model.sampling_offsets = torch.nn.Linear(2, 2)
    model.head = torch.nn.Linear(2, 2)
    lrs = sorted(g["lr"] for g in param_groups(model, recipe.solver))
    assert lrs == pytest.approx([2e-5, 2e-4])
    factor = lr_factor(recipe.solver, recipe.solver.max_iter)
    assert factor(0) == 1.0 and factor(299_999) == 1.0 and factor(300_000) == pytest.approx(0.1)


TOY_DETIC_C2 = ("--config", "toy/Detic-C2_Toy")


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe", [TOY_PHASE1, TOY_DETIC_C2], ids=["decola-phase1", "centernet2-box-and-image"]
)
def test_two_process_ddp_training(decola, tmp_path: Path, recipe: tuple[str, ...]) -> None:
    """Two processes; with CenterNet2 some steps mix a box batch on one rank with an
    image-labelled batch (no mask or box-regression gradients) on the other."""
    result = train_toy(
        decola,
        "--output-dir",
        str(tmp_path / "ddp"),
        "--max-iter",
        "3",
        "--num-gpus",
        "2",
        data_root=tmp_path / "data",
        recipe=recipe,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ddp" / "model_final.pth").exists()
    records = metrics_by_iter(tmp_path / "ddp" / "metrics.jsonl")
    assert records[3]["total_loss"] > 0
    if recipe == TOY_DETIC_C2:  # both kinds of batch were trained on
        assert any(r["image_loss_stage0"] > 0 for r in records.values())
        assert any(r["loss_mask"] > 0 for r in records.values())


@pytest.mark.slow
def test_toy_phase1_learns_to_find_the_objects(decola, tmp_path: Path) -> None:
    from decola_core.evaluation import GroundTruth, Predictions, evaluate

    result = train_toy(
        decola,
        "--output-dir",
        str(tmp_path / "run"),
        "--max-iter",
        "300",
        "--checkpoint-period",
        "300",
        data_root=tmp_path / "data",
    )
    assert result.returncode == 0, result.stderr
    metrics = metrics_by_iter(tmp_path / "run" / "metrics.jsonl")
    assert metrics[300]["total_loss"] < 0.5 * metrics[1]["total_loss"]
    out = tmp_path / "eval"
    ev = decola(
        "eval",
        "--config",
        "toy/DECOLA_PHASE1_Toy",
        "--weights",
        str(tmp_path / "run" / "model_final.pth"),
        "--data-root",
        str(tmp_path / "data"),
        "--conditioned",
        "--output-dir",
        str(out),
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr
    ap50 = json.loads((out / "metrics.json").read_text())["AP50"]
    assert ap50 > 20.0
    gt = GroundTruth.load(tmp_path / "data" / "toy" / "annotations" / "toy_val.json")
    counts = Counter(p["category_id"] for p in json.loads((out / "predictions.json").read_text()))
    assert len(counts) > 1
    assert evaluate(gt, Predictions.load(out / "predictions.json")).metrics[
        "AP50"
    ] == pytest.approx(ap50)

    # the trained model, loaded by path alone (the checkpoint records its recipe), finds the
    # objects of validation images when prompted with their classes (a random model: 0 of 22)
    from decola_core import Detector
    from decola_core.structures.boxes import box_iou

    data = tmp_path / "data"
    detector = Detector.from_pretrained(tmp_path / "run" / "model_final.pth", data_root=data)
    val = json.loads((data / "toy" / "annotations" / "toy_val.json").read_text())
    hits = total = 0
    for image in val["images"][:10]:
        objects = [a for a in val["annotations"] if a["image_id"] == image["id"]]
        names = sorted({detector.class_names[a["category_id"] - 1] for a in objects})
        found = detector.detect(
            data / "toy" / "images" / image["file_name"], classes=names, threshold=0.0
        )
        for a in objects:
            x, y, w, h = a["bbox"]
            name = detector.class_names[a["category_id"] - 1]
            same = [i for i, n in enumerate(found.names) if n == name][:3]  # its 3 best
            total += 1
            if same:
                iou = box_iou(torch.tensor([[x, y, x + w, y + h]]), found.boxes[same])[0]
                hits += int(iou.max() > 0.5)
    assert hits >= 0.5 * total, (hits, total)

    # decola predict gives the same detections as the API, as JSON and a picture
    image = val["images"][0]
    names = sorted({detector.class_names[a["category_id"] - 1] for a in val["annotations"]
                    if a["image_id"] == image["id"]})  # fmt: skip
    result = decola(
            "predict", str(data / "toy" / "images" / image["file_name"]),
            "--weights", str(tmp_path / "run" / "model_final.pth"), "--data-root", str(data),
            "--classes", ",".join(names), "--threshold", "0.1",
            "--output-dir", str(tmp_path / "pred"), timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    stem = Path(image["file_name"]).stem
    record = json.loads((tmp_path / "pred" / f"{stem}.json").read_text())
    api = detector.detect(
        data / "toy" / "images" / image["file_name"], classes=names, threshold=0.1
    )
    assert [d["class_name"] for d in record["detections"]] == api.names and api.names
    assert (tmp_path / "pred" / f"{stem}.png").is_file()


@pytest.mark.slow
def test_toy_c2_learns_boxes_and_masks(decola, tmp_path: Path) -> None:
    """The toy CenterNet2 recipe, default length, from the shorthand: box AP50 and mask AP50
    on toy val rise far above a randomly initialised model's (measured on toy set v3: 76.4 /
    77.0 after 300 iterations vs 0.1 / 0.0)."""
    from decola_core.modeling import build_model

    data = tmp_path / "data"
    start = time.monotonic()
    result = decola(
        "train", "--baseline", "boxsup", "--detector", "c2", "--dataset", "toy",
        "--data-root", str(data), "--output-dir", str(tmp_path / "run"), timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert "training toy/BoxSup-C2_Toy (centernet2)" in result.stderr
    torch.manual_seed(0)
    random_model = build_model(load_recipe("toy/BoxSup-C2_Toy"), data_root=data)
    torch.save({"model": random_model.state_dict()}, tmp_path / "random.pth")
    scores = {}
    for name, weights in (("trained", tmp_path / "run" / "model_final.pth"),
                          ("random", tmp_path / "random.pth")):  # fmt: skip
        out = tmp_path / f"eval_{name}"
        ev = decola(
            "eval", "--config", "toy/BoxSup-C2_Toy", "--weights", str(weights),
            "--data-root", str(data), "--output-dir", str(out), timeout=600,
        )  # fmt: skip
        assert ev.returncode == 0, ev.stderr
        box = json.loads((out / "metrics.json").read_text())["AP50"]
        mask = json.loads((out / "metrics_segm.json").read_text())["AP50"]
        scores[name] = (box, mask)
    (box, mask), (random_box, random_mask) = scores["trained"], scores["random"]
    assert box > 45 and mask > 45, (scores, seconds)
    assert box > random_box + 40 and mask > random_mask + 40, scores
    assert seconds < 600, seconds


def test_lvis_reader_views_and_pseudo_scores(tmp_path: Path) -> None:
    from decola_core.data.catalog import DatasetCatalog

    categories = [
        {"id": 1, "name": "a", "frequency": "r"},
        {"id": 2, "name": "b", "frequency": "f"},
    ]
    images = [
        {"id": 7, "file_name": "x.jpg", "height": 10, "width": 20, "pos_category_ids": [2]},
        {"id": 3, "coco_url": "http://h/train2017/y.jpg", "height": 5, "width": 5},
    ]
    anns = [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.9},
        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [1, 1, 2, 2], "score": 0.2},
        {"id": 3, "image_id": 3, "category_id": 2, "bbox": [0, 0, 1, 1], "iscrowd": 1},
    ]
    (tmp_path / "lvis").mkdir()
    (tmp_path / "lvis" / "lvis_v1_train.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories})
    )
    catalog = DatasetCatalog(tmp_path)
    full = catalog.open("lvis_v1_train")
    assert full.image_ids.tolist() == [3, 7]  # ascending ids
    assert full.record(0).classes.size == 0  # crowd dropped
    assert full.record(0).path == tmp_path / "coco" / "train2017" / "y.jpg"
    assert full.record(1).classes.tolist() == [0, 1] and full.record(1).image_labels.tolist() == [1]
    base = catalog.open("lvis_v1_train_norare")  # no file: a view of LVIS without rare boxes
    assert base.record(1).classes.tolist() == [1] and len(base.category_ids) == 2
    confident = catalog.open("lvis_v1_train", min_score=0.5)
    assert confident.record(1).scores.tolist() == pytest.approx([0.9])


def test_visualisations_eval_only_and_the_detic_toy_baseline(decola, tmp_path: Path) -> None:
    from PIL import Image

    data_root = tmp_path / "data"
    result = train_toy(
        decola,
        "--output-dir",
        str(tmp_path / "run"),
        "--max-iter",
        "2",
        "--set",
        "logging.wandb.vis_period=2",
        data_root=data_root,
    )
    assert result.returncode == 0, result.stderr
    targets = Image.open(tmp_path / "run" / "vis" / "iter_0000002_box_targets.png")
    assert targets.size[0] > 50  # an augmented training image with its boxes drawn
    assert "img/s" in result.stderr
    evaluated = decola(
        "train",
        "--phase",
        "1",
        "--dataset",
        "toy",
        "--data-root",
        str(data_root),
        "--output-dir",
        str(tmp_path / "run"),
        "--eval-only",
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "AP50" in json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    detic = decola(
        "train",
        "--baseline",
        "detic",
        "--dataset",
        "toy",
        "--data-root",
        str(data_root),
        "--output-dir",
        str(tmp_path / "detic"),
        "--max-iter",
        "4",
        "--set",
        "logging.period=1",
        timeout=600,
    )
    assert detic.returncode == 0, detic.stderr
    records = metrics_by_iter(tmp_path / "detic" / "metrics.jsonl")
    assert any(r["loss_image"] > 0 for r in records.values())  # image-labelled batches were used


def test_c2_visualises_masks_logs_to_wandb_and_evaluates_boxes_and_masks(
    decola, tmp_path: Path
) -> None:
    """A CenterNet2 run through the same trainer: mask overlays in the visualisations, W&B
    (offline mode, no network) receiving them, then ``--eval-only`` scoring boxes and masks."""
    from PIL import Image

    data_root, run = tmp_path / "data", tmp_path / "run"
    result = train_toy(
        decola, "--output-dir", str(run), "--max-iter", "2", "--wandb",
        "--set", "logging.wandb.vis_period=2", data_root=data_root, recipe=TOY_C2,
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    targets = np.asarray(Image.open(run / "vis" / "iter_0000002_box_targets.png"))
    plain = np.asarray(Image.open(run / "vis" / "iter_0000002_box_predictions.png"))
    assert targets.shape == plain.shape and (targets != plain).any()
    logged = list(run.glob("wandb/offline-run-*/files/media/images/*.png"))
    assert len(logged) == 2, logged  # predictions and targets
    evaluated = decola(
        *toy_train_args(data_root, "--output-dir", str(run), "--eval-only", recipe=TOY_C2),
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "mask AP" in evaluated.stdout
    for name in ("metrics.json", "metrics_segm.json"):
        assert "AP50" in json.loads((run / "eval" / name).read_text())


def test_a_signal_writes_a_checkpoint_and_exits_75_then_the_run_resumes(decola, tmp_path) -> None:
    data_root, out = tmp_path / "data", tmp_path / "run"
    args = toy_train_args(data_root, "--output-dir", str(out), "--max-iter", "400")
    proc = subprocess.Popen(
        decola.argv(*args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr
    assert "SIGTERM at iteration" in stderr and "run the same command again" in stderr
    stopped = int(stderr.split("SIGTERM at iteration ")[1].split(":")[0])
    assert 2 <= stopped < 400 and (out / f"model_{stopped:07d}.pth").is_file()
    assert not (out / "model_final.pth").exists()
    resumed = decola(*args[:-1], "12" if stopped < 12 else str(stopped + 2), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at iteration {stopped}" in resumed.stderr


def test_progress_is_logged_as_lines_when_not_a_terminal(decola, tmp_path: Path) -> None:
    result = train_toy(
        decola, "--output-dir", str(tmp_path / "run"), "--max-iter", "3", data_root=tmp_path / "d"
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if " it, " in line and "it/s" in line]
    assert lines and lines[-1].startswith("train loss") and "3/3 it" in lines[-1]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "training toy/DECOLA_PHASE1_Toy" in log and "3/3 it" in log
