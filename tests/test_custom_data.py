"""Your own data: one-command fine-tuning on a COCO-format set (vocabulary, embeddings,
federated-loss counts, protocol and schedule derived from the set) and embedding provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from decola_core.data.toy import ensure_toy_dataset

#: household names, unlike the toy's colour_shape names; ids far from contiguous
NAMES = {1: "kettle", 2: "lamp", 3: "teapot", 5: "vase", 8: "mug"}
NEW_IDS = {1: 4, 2: 17, 3: 9, 5: 30, 8: 2}  # toy category id -> this set's id


def coco_copy(toy_file: Path, out: Path) -> dict:
    """A COCO-format set made from a toy split: 5 of its classes under other names and ids, no
    LVIS fields (frequency, neg_category_ids)."""
    data = json.loads(toy_file.read_text())
    categories = [{"id": NEW_IDS[i], "name": n, "supercategory": "thing"} for i, n in NAMES.items()]
    annotations = [
        {k: a[k] for k in ("id", "image_id", "bbox", "area", "iscrowd")}
        | {"category_id": NEW_IDS[a["category_id"]]}
        for a in data["annotations"]
        if a["category_id"] in NEW_IDS
    ]
    images = [{k: i[k] for k in ("id", "file_name", "height", "width")} for i in data["images"]]
    coco = {"images": images, "annotations": annotations, "categories": categories[::-1]}
    out.write_text(json.dumps(coco))
    return coco


@pytest.fixture(scope="module")
def my_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mine")
    toy = ensure_toy_dataset(root / "toy_source")
    coco_copy(toy / "annotations" / "toy_train.json", root / "train.json")
    coco_copy(toy / "annotations" / "toy_val.json", root / "val.json")
    return {"root": root, "images": toy / "images"}


@pytest.fixture(scope="module")
def fine_tuned(decola, my_data, tiny_clip, toy_model, tmp_path_factory) -> Path:
    """``decola train --phase 1`` recipe on the set, from a toy checkpoint with 8 classes."""
    config, clip = tiny_clip
    _, _, toy_weights = toy_model
    run = tmp_path_factory.mktemp("runs") / "mine"
    result = decola(
        "train", "--config", "toy/DECOLA_PHASE1_Toy",
        "--train-json", str(my_data["root"] / "train.json"),
        "--train-images", str(my_data["images"]),
        "--val-json", str(my_data["root"] / "val.json"), "--val-images", str(my_data["images"]),
        "--clip-weights", str(clip), "--clip-model", str(config), "--epochs", "0.2",
        "--weights", str(toy_weights), "--output-dir", str(run), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "5 classes (COCO protocol), 96 training images" in result.stderr
    assert "skipped for shape" in result.stderr  # the 8-class checkpoint's vocabulary buffers
    return run


def test_fine_tuning_derives_the_recipe_from_the_set(fine_tuned, my_data, tiny_clip) -> None:
    from decola_core.text import ClipTextEncoder

    recipe = yaml.safe_load((fine_tuned / "recipe.yaml").read_text())
    c = recipe["model"]["classifier"]
    assert c["num_classes"] == 5 and c["embed_dim"] == 64
    assert recipe["model"]["loss"]["fed_loss_num_classes"] == 4  # min(the recipe's, 5)
    assert recipe["solver"]["max_iter"] == 5  # ceil(0.2 epochs x 96 images / 4 per batch)
    assert recipe["solver"]["steps"] == [4]
    assert recipe["data"]["train"][0]["name"] == "custom_train"
    assert recipe["data"]["datasets"]["custom_val"]["evaluator"] == "coco"
    # names in category-id order, embedded with the given CLIP, with provenance
    train = json.loads((my_data["root"] / "train.json").read_text())
    by_id = sorted(train["categories"], key=lambda c: c["id"])
    info = json.loads(Path(c["category_info"]).read_text())
    assert [x["name"] for x in info] == [x["name"] for x in by_id]
    for x in info:
        images = {a["image_id"] for a in train["annotations"] if a["category_id"] == x["id"]}
        assert x["image_count"] == len(images) > 0
    config, clip = tiny_clip
    expected = ClipTextEncoder(str(config), clip).encode([f"a {x['name']}" for x in by_id])
    np.testing.assert_allclose(np.load(c["embeddings"]), expected, atol=1e-5)
    sidecar = json.loads(Path(c["embeddings"] + ".json").read_text())
    assert sidecar["encoder"] == "tiny-clip" and sidecar["dim"] == 64
    assert sidecar["names"] == [x["name"] for x in by_id] and sidecar["template"] == "a {}"
    state = torch.load(fine_tuned / "model_final.pth", weights_only=True)
    assert state["embedding_provenance"]["weights_sha256"] == sidecar["weights_sha256"]


def test_the_fine_tuned_run_evaluates_and_predicts_with_its_names(
    decola, fine_tuned, my_data
) -> None:
    result = decola(
        "eval", "--config", str(fine_tuned / "recipe.yaml"),
        "--weights", str(fine_tuned / "model_final.pth"), "--output-dir", str(fine_tuned / "ev"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((fine_tuned / "ev" / "metrics.json").read_text())
    assert metrics["protocol"] == "coco" and "APr" not in metrics
    image = my_data["images"] / "toy_val_0000.png"
    result = decola(
        "predict", str(image), "--weights", str(fine_tuned / "model_final.pth"),
        "--classes", "kettle,mug", "--threshold", "0", "--output-dir", str(fine_tuned / "pred"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads((fine_tuned / "pred" / "toy_val_0000.json").read_text())["detections"]
    assert found and {d["class_name"] for d in found} <= {"kettle", "mug"}
    unknown = decola("predict", str(image), "--weights", str(fine_tuned / "model_final.pth"),
                     "--classes", "red_square")  # fmt: skip
    assert unknown.returncode == 2 and "red_square" in unknown.stderr


def test_weights_from_another_embedding_space_are_refused(decola, fine_tuned, my_data) -> None:
    """The fine-tuned checkpoint records its CLIP; training on with user embeddings (another
    space) is refused in one line unless --allow-embedding-mismatch."""
    rng = np.random.default_rng(0)
    mine = my_data["root"] / "mine.npy"
    np.save(mine, rng.normal(size=(5, 64)).astype(np.float32))
    common = (
        "train", "--config", "toy/DECOLA_PHASE1_Toy",
        "--train-json", str(my_data["root"] / "train.json"),
        "--train-images", str(my_data["images"]),
        "--embeddings", str(mine), "--weights", str(fine_tuned / "model_final.pth"),
        "--max-iter", "1",
    )  # fmt: skip
    refused = decola(*common, "--output-dir", str(my_data["root"] / "refused"))
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.strip().splitlines()[-1:]
    assert "trained with class embeddings from tiny-clip" in line
    assert "--allow-embedding-mismatch" in line and "Traceback" not in refused.stderr
    allowed = decola(*common, "--allow-embedding-mismatch",
                     "--output-dir", str(my_data["root"] / "allowed"))  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert "loading anyway (--allow-embedding-mismatch)" in allowed.stderr


@pytest.mark.parametrize("recipe", ["toy/BoxSup-DeformDETR_Toy", "toy/DECOLA_PHASE2_Toy"])
def test_the_flags_combine_with_the_baseline_and_phase_2(
    decola, my_data, toy_model, tmp_path, recipe
) -> None:
    """--train-json works with any recipe: the BoxSup baseline and phase 2 (from phase-1
    weights; its image-labelled set goes, so it needs no teacher) train on the set with the
    user's own embeddings."""
    _, _, phase1 = toy_model
    start = ["--weights", str(phase1)] if "PHASE2" in recipe else []
    mine = tmp_path / "mine.npy"
    np.save(mine, np.random.default_rng(1).normal(size=(5, 64)).astype(np.float32))
    run = tmp_path / "run"
    result = decola(
        "train", "--config", recipe,
        "--train-json", str(my_data["root"] / "train.json"),
        "--train-images", str(my_data["images"]),
        "--embeddings", str(mine), "--max-iter", "2", "--output-dir", str(run), *start,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert resolved["model"]["classifier"]["num_classes"] == 5
    assert [d["name"] for d in resolved["data"]["train"]] == ["custom_train"]
    sidecar = json.loads((run / "vocabulary" / "class_embeddings.npy.json").read_text())
    assert sidecar["encoder"] == "user" and sidecar["source"] == str(mine.resolve())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["iter"] == 2 and rows[-1]["total_loss"] > 0


def test_bad_custom_data_is_one_line(decola, my_data, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1}]}))
    cases = {
        ("--train-json", str(bad), "--train-images", str(my_data["images"])): "categories[0]",
        ("--train-json", str(bad)): "--train-json and --train-images together",
        ("--epochs", "3"): "go with --train-json",
        ("--train-json", str(my_data["root"] / "train.json"),
         "--train-images", str(my_data["images"])): "--clip-weights FILE",
    }  # fmt: skip
    for args, expected in cases.items():
        result = decola("train", "--config", "toy/DECOLA_PHASE1_Toy", *args,
                        "--output-dir", str(tmp_path / "run"))  # fmt: skip
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_provenance_comparison() -> None:
    from decola_core.utils.provenance import same_space

    clip = {"encoder": "ViT-B-32-quickgelu", "weights_sha256": "a" * 64, "dim": 512}
    assert same_space(clip, {**clip, "template": "a photo of a {}"}) is True
    assert same_space(clip, {**clip, "weights_sha256": "b" * 64}) is False
    assert same_space(clip, {"encoder": "ViT-B-32-quickgelu", "dim": 768}) is False
    assert same_space(clip, None) is None and same_space({}, clip) is None


def tagged_images(data_root: Path, count: int = 6) -> dict[str, list[str]]:
    """The first toy val images with their annotated class names: tags without boxes."""
    val = json.loads((data_root / "toy" / "annotations" / "toy_val.json").read_text())
    names = {c["id"]: c["name"] for c in val["categories"]}
    tags: dict[str, list[str]] = {}
    for image in val["images"][:count]:
        objects = [a for a in val["annotations"] if a["image_id"] == image["id"]]
        tags[image["file_name"]] = sorted({names[a["category_id"]] for a in objects})
    return tags


def test_tags_files_in_csv_and_json_read_alike(tmp_path: Path) -> None:
    from decola_core.errors import DatasetError
    from decola_core.pseudo.tags import read_tags

    (tmp_path / "t.csv").write_text("file,tags\na.png,cat;sofa\nb.png,dog\na.png,lamp;cat\n")
    expected = {"a.png": ["cat", "sofa", "lamp"], "b.png": ["dog"]}
    (tmp_path / "t.json").write_text(json.dumps(expected))
    assert read_tags(tmp_path / "t.csv") == expected == read_tags(tmp_path / "t.json")
    (tmp_path / "bad.csv").write_text("image,labels\na.png,cat\n")
    with pytest.raises(DatasetError, match="header 'file,tags'"):
        read_tags(tmp_path / "bad.csv")


def test_self_label_tagged_images_and_export_coco_and_yolo(decola, toy_model, tmp_path) -> None:
    """DECOLA's loop on "your" images: tags in, boxes out, exported and read back."""
    data_root, _, weights = toy_model
    tags = tagged_images(data_root)
    csv = tmp_path / "tags.csv"
    csv.write_text("file,tags\n" + "".join(f"{f},{';'.join(n)}\n" for f, n in tags.items()))
    out = tmp_path / "labels"
    common = (
        "self-label", "--config", "toy/DECOLA_PHASE1_Toy", "--weights", str(weights),
        "--data-root", str(data_root), "--images", str(data_root / "toy" / "images"),
        "--tags", str(csv), "--min-sizes", "96", "128", "--output-dir", str(out),
    )  # fmt: skip
    result = decola(*common, "--export", "coco")
    assert result.returncode == 0, result.stderr
    pseudo = json.loads((out / "pseudo_labels.json").read_text())
    coco = json.loads((out / "pseudo_labels_coco.json").read_text())
    ids = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    assert sorted(files.values()) == sorted(tags)
    assert len(coco["annotations"]) == len(pseudo["annotations"]) > 0
    for a, p in zip(coco["annotations"], pseudo["annotations"], strict=True):
        assert ids[a["category_id"]] in tags[files[a["image_id"]]]  # only tagged classes
        assert a["bbox"] == p["bbox"] and a["score"] == p["score"]
    # every tag got a box
    boxed = {(files[a["image_id"]], ids[a["category_id"]]) for a in coco["annotations"]}
    assert boxed == {(f, n) for f, names in tags.items() for n in names}

    result = decola(*common, "--export", "yolo")  # resumes: the labelling is done
    assert result.returncode == 0, result.stderr
    yolo = out / "pseudo_labels_yolo"
    classes = (yolo / "classes.txt").read_text().splitlines()
    assert classes == [ids[k] for k in sorted(ids)]
    sizes = {i["file_name"]: (i["width"], i["height"]) for i in coco["images"]}
    read_back = []
    for file, (w, h) in sizes.items():
        for line in (yolo / "labels" / file).with_suffix(".txt").read_text().splitlines():
            k, cx, cy, bw, bh = line.split()
            box = [(float(cx) - float(bw) / 2) * w, (float(cy) - float(bh) / 2) * h,
                   float(bw) * w, float(bh) * h]  # fmt: skip
            read_back.append((file, classes[int(k)], box))
    original = [
        (files[a["image_id"]], ids[a["category_id"]], a["bbox"]) for a in coco["annotations"]
    ]
    assert len(read_back) == len(original)
    for (f1, n1, b1), (f2, n2, b2) in zip(sorted(read_back), sorted(original), strict=True):
        assert (f1, n1) == (f2, n2) and np.allclose(b1, b2, atol=2e-3 * max(sizes[f1]))


def test_unknown_tags_are_refused_with_suggestions(decola, toy_model, tmp_path) -> None:
    data_root, _, weights = toy_model
    (tmp_path / "tags.json").write_text(json.dumps({"toy_val_0000.png": ["red_squar", "blob"]}))
    result = decola(
        "self-label", "--config", "toy/DECOLA_PHASE1_Toy", "--weights", str(weights),
        "--data-root", str(data_root), "--images", str(data_root / "toy" / "images"),
        "--tags", str(tmp_path / "tags.json"), "--min-sizes", "96",
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "2 tag(s) not in the model's vocabulary" in line
    assert "'red_squar' (did you mean red_square" in line and "'blob'" in line
