"""``decola predict`` and the Python ``Detector``: outputs, drawings, recipes and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

TOY = "toy/DECOLA_PHASE1_Toy"


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def outline_changed(before: np.ndarray, after: np.ndarray, box: list[float]) -> float:
    """Share of the columns along the box's top and bottom edges where the drawing changed a
    pixel (an edge at a fractional y may land on either neighbouring row)."""
    x0, y0, x1, y1 = box
    h, w = before.shape[:2]
    xs = np.arange(max(0, int(np.ceil(x0))), min(w, int(x1) + 1))
    diff = np.any(before != after, axis=-1)
    changed = []
    for y in (y0, y1):
        rows = sorted({min(max(r, 0), h - 1) for r in (int(np.floor(y)), int(np.ceil(y)))})
        changed.append(diff[rows][:, xs].any(0))
    return float(np.concatenate(changed).mean())


def test_predict_writes_detections_and_drawn_pictures(decola, toy_model, tmp_path: Path) -> None:
    data_root, bare, _ = toy_model
    images = data_root / "toy" / "images"
    for sub, name in (("a", "toy_val_0000.png"), ("b", "toy_val_0001.png")):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(images / name, tmp_path / "in" / sub / "x.png")  # same stem twice
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = decola(
        "predict", str(tmp_path / "in"), "--config", TOY, "--weights", str(bare),
        "--data-root", str(data_root), "--classes", "red_square,green_circle",
        "--classes", "blue_square", "--threshold", "0", "--max-dets", "4", "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "a__x.json", "a__x.png", "b__x.json", "b__x.png"
    ]  # fmt: skip
    for stem, source in (("a__x", "toy_val_0000.png"), ("b__x", "toy_val_0001.png")):
        record = json.loads((out / f"{stem}.json").read_text())
        before = read_rgb(images / source)
        assert (record["height"], record["width"]) == before.shape[:2]
        found = record["detections"]
        assert len(found) == 4
        assert {d["class_name"] for d in found} <= {"red_square", "green_circle", "blue_square"}
        scores = [d["score"] for d in found]
        assert scores == sorted(scores, reverse=True)
        for d in found:
            x0, y0, x1, y1 = d["box_xyxy"]
            assert 0 <= x0 <= x1 <= record["width"] and 0 <= y0 <= y1 <= record["height"]
        after = read_rgb(out / f"{stem}.png")
        assert after.shape == before.shape
        assert outline_changed(before, after, found[0]["box_xyxy"]) > 0.9
        far = np.ones(before.shape[0], bool)  # rows away from every box (and its tag) untouched
        for d in found:
            far[max(0, int(d["box_xyxy"][1]) - 16) : int(d["box_xyxy"][3]) + 3] = False
        assert np.array_equal(before[far], after[far])


def test_predict_errors_are_one_line(decola, toy_model, tmp_path: Path) -> None:
    data_root, bare, _ = toy_model
    image = data_root / "toy" / "images" / "toy_val_0000.png"
    out = str(tmp_path / "o")
    common = ("--weights", str(bare), "--data-root", str(data_root), "--output-dir", out)
    cases = [
        ((str(tmp_path / "missing.png"), "--config", TOY), "missing.png: no such image"),
        ((str(image), "--config", TOY, "--classes", "red_squar"), "did you mean 'red_square'"),
        ((str(image),), "does not record its recipe"),
    ]
    for args, message in cases:
        result = decola("predict", *args, *common)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert message in result.stderr
    assert not (tmp_path / "o").exists()


def test_detector_api_detects_and_draws(toy_model) -> None:
    from PIL import Image

    from decola_core import Detector

    data_root, _, with_recipe = toy_model
    detector = Detector.from_pretrained(with_recipe, data_root=data_root)  # recipe from the file
    assert detector.class_names[0] == "red_square" and len(detector.class_names) == 8
    path = data_root / "toy" / "images" / "toy_val_0002.png"
    found = detector.detect(path, classes=["yellow_circle", 2], threshold=0.0, max_detections=5)
    assert len(found) == 5 and set(found.names) <= {"yellow_circle", "blue_triangle"}
    with Image.open(path) as image:
        again = detector.detect(image, classes=["yellow_circle", 2], threshold=0.0)
        assert torch.allclose(again.boxes[:5], found.boxes)
        drawn = detector.draw(image, found)
        before = np.asarray(image.convert("RGB"))
    h, w = before.shape[:2]
    inside = [
        b for b in found.boxes.tolist() if b[0] > 2 and b[1] > 2 and b[2] < w - 3 and b[3] < h - 3
    ]
    assert inside and outline_changed(before, np.asarray(drawn), inside[0]) > 0.9

    general = detector.detect(path, classes=["red_circle"], conditioned=False, threshold=0.0)
    assert set(general.names) <= {"red_circle"}
    everything = detector.detect(path, threshold=0.0, max_detections=300)
    assert len(everything) > len(general)
    strict = detector.detect(path, threshold=0.99)
    assert bool((strict.scores >= 0.99).all())


def test_pickled_weights_load_only_with_trust_weights(decola, toy_model, tmp_path: Path) -> None:
    """detectron2-style .pkl weights ({"model": {name: array}}) can run code when unpickled:
    refused by default with the flag to use, loaded with --trust-weights."""
    import pickle

    import torch

    from decola_core.config import load_recipe
    from decola_core.modeling import build_model

    data_root, _, _ = toy_model
    torch.manual_seed(0)
    model = build_model(load_recipe("toy/BoxSup-DeformDETR_Toy"), data_root=data_root)
    weights = tmp_path / "tiny.pkl"
    with open(weights, "wb") as handle:
        pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()}}, handle)
    image = data_root / "toy" / "images" / "toy_val_0000.png"
    args = ("predict", str(image), "--config", "toy/BoxSup-DeformDETR_Toy",
            "--weights", str(weights), "--data-root", str(data_root),
            "--output-dir", str(tmp_path / "out"))  # fmt: skip
    refused = decola(*args)
    assert refused.returncode == 2 and "--trust-weights" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    trusted = decola(*args, "--trust-weights")
    assert trusted.returncode == 0, trusted.stderr
    kept = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]  # dropped
    assert f"loaded {len(kept)} tensors from {weights}" in trusted.stderr


@pytest.mark.reference
def test_predict_with_a_centernet2_model_writes_rle_masks(decola, reference_dir, tmp_path) -> None:
    """The small original C2 model through ``decola predict``: every detection carries an RLE
    mask (string counts) that decodes to its reported area, equal to the detector's own pasted
    mask; the PNG shows the masks tinted under the boxes."""
    from PIL import Image
    from pycocotools import mask as mask_util

    from decola_core.config import load_recipe
    from decola_core.engine.predict import filter_detections
    from decola_core.modeling.predictor import Predictor

    c2 = reference_dir / "c2"
    if not (c2 / "golden_c2_small.pth").is_file():
        pytest.skip("no CenterNet2 reference model")
    recipe_file = tmp_path / "small.yaml"
    imported = decola("config", "import", str(c2 / "golden_c2_small.yaml"), "-o", str(recipe_file))
    assert imported.returncode == 0, imported.stderr
    image = torch.load(c2 / "golden_c2_inputs.pt")["images"][0]
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "a.png")
    out = tmp_path / "out"
    result = decola(
        "predict", str(tmp_path / "a.png"), "--config", str(recipe_file),
        "--weights", str(c2 / "golden_c2_small.pth"), "--data-root", str(reference_dir),
        "--threshold", "0.3", "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads((out / "a.json").read_text())["detections"]
    assert found
    predictor = Predictor.from_recipe(
        load_recipe(recipe_file), c2 / "golden_c2_small.pth", data_root=reference_dir
    )
    (dets,) = predictor([image])
    dets = filter_detections(dets, 0.3, len(found))
    assert [int(m.sum()) for m in dets.masks] == [d["mask_area"] for d in found]
    for d in found:
        assert isinstance(d["mask"]["counts"], str)
        decoded = mask_util.decode({"size": d["mask"]["size"], "counts": d["mask"]["counts"]})
        assert decoded.shape == tuple(image.shape[1:])
        assert int(decoded.sum()) == d["mask_area"]
    drawn = read_rgb(out / "a.png")
    best = mask_util.decode(found[0]["mask"]).astype(bool)  # tinted under the boxes
    before = image.permute(1, 2, 0).numpy()
    assert (drawn[best] != before[best]).any(axis=1).mean() > 0.5
