"""`decola eval`: scoring a results file and running a model over a dataset, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decola_core.config import load_recipe
from decola_core.evaluation.synthetic import synthetic_lvis
from decola_core.modeling import build_model
from decola_core.modeling.checkpoint import save_weights


@pytest.fixture()
def scored_files(tmp_path: Path):
    gt, dets = synthetic_lvis(30, 12, 20, seed=3)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(dets))
    return tmp_path


def test_score_a_results_file(decola, scored_files: Path) -> None:
    result = decola(
        "eval",
        "--predictions",
        str(scored_files / "results.json"),
        "--annotations",
        str(scored_files / "gt.json"),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((scored_files / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}
    assert 0 < metrics["AP"] < 100 and "APr" in result.stdout
    rows = (scored_files / "metrics_per_category.csv").read_text().splitlines()
    assert rows[0].startswith("category_id,name,frequency") and len(rows) == 13


def test_several_budgets_after_one_flag(decola, scored_files: Path) -> None:
    out = scored_files / "cmap.json"
    result = decola(
        "eval",
        "--predictions",
        str(scored_files / "results.json"),
        "--annotations",
        str(scored_files / "gt.json"),
        "--k",
        "5",
        "10",
        "20",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    per_k = json.loads(out.read_text())["k"]
    assert list(per_k) == ["5", "10", "20"]
    assert per_k["5"]["AP"] <= per_k["20"]["AP"] + 1e-9
    repeated = decola(
        "eval",
        "--predictions",
        str(scored_files / "results.json"),
        "--annotations",
        str(scored_files / "gt.json"),
        "--k",
        "5",
        "--k",
        "10",
        "--output",
        str(scored_files / "again.json"),
    )
    assert repeated.returncode == 0, repeated.stderr
    assert list(json.loads((scored_files / "again.json").read_text())["k"]) == ["5", "10"]


def test_bad_results_are_one_line_errors(decola, scored_files: Path) -> None:
    bad = scored_files / "bad.json"
    bad.write_text(
        json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    )
    result = decola(
        "eval", "--predictions", str(bad), "--annotations", str(scored_files / "gt.json")
    )
    assert result.returncode == 2 and "image ids that are not in" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the progress line, then the error
    missing = decola("eval", "--predictions", str(bad))
    assert missing.returncode == 2 and "needs --annotations" in missing.stderr


def toy_eval_set(root: Path, corrupt: bool = False) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    images_dir = root / "imgs"
    images_dir.mkdir()
    images, annotations = [], []
    for i in range(3):
        array = rng.integers(0, 255, (160, 192, 3), dtype=np.uint8)
        Image.fromarray(array).save(images_dir / f"{i}.png")
        images.append(
            {
                "id": i + 1,
                "file_name": f"{i}.png",
                "height": 160,
                "width": 192,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            }
        )
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1 + i % 8,
                "bbox": [20.0, 30.0, 60.0, 50.0],
                "area": 3000.0,
            }
        )
    if corrupt:
        (images_dir / "bad.png").write_bytes(b"not an image")
        images.append({"id": 9, "file_name": "bad.png", "height": 10, "width": 10})
    categories = [{"id": c + 1, "name": f"shape{c}", "frequency": "cfr"[c % 3]} for c in range(8)]
    ann = root / "toy_eval.json"
    ann.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return ann, images_dir


def model_eval_args(tmp_path: Path, data_root: Path, corrupt: bool = False) -> list[str]:
    """``decola eval`` arguments running a random toy model over the toy eval set, conditioned."""
    torch.manual_seed(0)
    model = build_model(load_recipe("toy/DECOLA_PHASE1_Toy"), data_root=data_root)
    weights = save_weights(model, tmp_path / "toy.pth")
    ann, images_dir = toy_eval_set(tmp_path, corrupt=corrupt)
    return [
        "eval", "--config", "toy/DECOLA_PHASE1_Toy", "--weights", str(weights),
        "--annotations", str(ann), "--images", str(images_dir), "--data-root", str(data_root),
        "--conditioned",
    ]  # fmt: skip


def test_run_a_model_over_a_dataset(decola, tmp_path: Path, toy_data_root: Path) -> None:
    out = tmp_path / "eval"
    args = [
        *model_eval_args(tmp_path, toy_data_root, corrupt=True),
        "--k",
        "5",
        "10",
        "--output-dir",
        str(out),
    ]
    failed = decola(*args)
    assert failed.returncode == 2 and "unreadable images" in failed.stderr
    result = decola(*args, "--max-bad-images", "1")
    assert result.returncode == 0, result.stderr
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == 3 * 10  # conditioned: top-10 per image, one prompt each
    for image_id, category in ((1, 1), (2, 2), (3, 3)):
        assert {p["category_id"] for p in predictions if p["image_id"] == image_id} == {category}
    assert all(len(p["bbox"]) == 4 for p in predictions)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["k"]) == ["5", "10"]


@pytest.mark.slow
def test_two_process_evaluation_matches_one(decola, tmp_path: Path, toy_data_root: Path) -> None:
    common = model_eval_args(tmp_path, toy_data_root)
    one = decola(*common, "--output-dir", str(tmp_path / "one"))
    two = decola(*common, "--output-dir", str(tmp_path / "two"), "--num-gpus", "2")
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a = json.loads((tmp_path / "one" / "predictions.json").read_text())
    b = json.loads((tmp_path / "two" / "predictions.json").read_text())
    assert len(a) == len(b) and sorted(p["image_id"] for p in a) == sorted(p["image_id"] for p in b)
    assert len(list((tmp_path / "two" / "shards").glob("rank*.jsonl"))) == 2


def test_coco_format_sets_use_the_coco_protocol_and_wandb_logging(
    decola, scored_files: Path
) -> None:
    gt = json.loads((scored_files / "gt.json").read_text())
    for c in gt["categories"]:
        del c["frequency"]
    (scored_files / "coco.json").write_text(json.dumps(gt))
    result = decola(
        "eval",
        "--predictions",
        str(scored_files / "results.json"),
        "--annotations",
        str(scored_files / "coco.json"),
        "--output",
        str(scored_files / "coco_metrics.json"),
        "--wandb",
        env={"WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((scored_files / "coco_metrics.json").read_text())
    assert metrics["protocol"] == "coco" and "APr" not in metrics and metrics["AP"] > 0
