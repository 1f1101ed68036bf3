"""The recipe keys that used to validate without any effect now change what decola does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from decola_core.config import load_recipe
from decola_core.config.schema import SolverConfig
from decola_core.data.lvis import LvisDataset
from decola_core.data.samplers import BatchPlanner, TrainStream
from decola_core.data.transforms import RandomFlip, Sample, build_train_augmentation
from decola_core.engine.solver import clip_gradients
from decola_core.errors import ConfigError
from decola_core.jobs import SelfLabelJob
from decola_core.modeling import build_model
from decola_core.modeling.backbone.d2_resnet import D2ResNet
from decola_core.modeling.backbone.resnet import ResNetBody

TOY = "toy/DECOLA_PHASE1_Toy"


def test_vertical_and_no_flip() -> None:
    image = torch.arange(3 * 3 * 4, dtype=torch.uint8).view(3, 3, 4)
    boxes = np.array([[0.0, 0.0, 2.0, 1.0]])
    always = np.random.default_rng(0)
    flipped = RandomFlip(prob=1.0, direction="vertical")(Sample(image, boxes), always)
    assert torch.equal(flipped.image, image.flip(-2))
    assert flipped.boxes.tolist() == [[0.0, 2.0, 2.0, 3.0]]  # y measured from the bottom
    same = RandomFlip(prob=1.0, direction="none")(Sample(image, boxes), always)
    assert same.image is image and same.boxes is boxes


def test_detr_crop_follows_crop_enabled() -> None:
    recipe = load_recipe("Base-DeformDETR_L_R50_4x")
    assert build_train_augmentation(recipe.data).steps[0].crop == (384, 600)
    off = load_recipe("Base-DeformDETR_L_R50_4x", ["data.crop.enabled=false"])
    assert build_train_augmentation(off.data).steps[0].crop is None
    other = load_recipe("Base-DeformDETR_L_R50_4x", ["data.crop.type=relative"])
    with pytest.raises(ConfigError, match="data.crop.type 'relative'"):
        build_train_augmentation(other.data)


def test_aspect_ratio_grouping_off_mixes_orientations() -> None:
    source = np.zeros(60, dtype=np.int64)
    landscape = np.arange(60) % 2 == 0
    grouped = BatchPlanner(TrainStream(60, seed=2), source, landscape, [6])
    mixed = BatchPlanner(TrainStream(60, seed=2), source, landscape, [6], by_orientation=False)
    orientations = {
        name: [
            len({bool(landscape[i]) for _, i in batch})
            for _, (_, batch) in zip(range(5), planner.batches(), strict=False)
        ]
        for name, planner in (("grouped", grouped), ("mixed", mixed))
    }
    assert orientations["grouped"] == [1] * 5
    assert max(orientations["mixed"]) == 2


def test_norm_choices_build_their_layers() -> None:
    kinds = {type(m) for m in D2ResNet(50, ["res4"], True, "GN", 0).modules()}
    assert torch.nn.GroupNorm in kinds and torch.nn.BatchNorm2d not in kinds
    kinds = {type(m) for m in D2ResNet(50, ["res4"], True, "SyncBN", 0).modules()}
    assert torch.nn.SyncBatchNorm in kinds
    kinds = {type(m) for m in ResNetBody("resnet18", [3, 4], "SyncBN").modules()}
    assert torch.nn.SyncBatchNorm in kinds


def test_filter_empty_annotations_drops_images_without_boxes(tmp_path: Path) -> None:
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 8, "width": 8} for i in (1, 2, 3)],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "set.json"
    path.write_text(json.dumps(data))
    assert LvisDataset(path, tmp_path).image_ids.tolist() == [1, 2, 3]
    assert LvisDataset(path, tmp_path, drop_empty=True).image_ids.tolist() == [2]


def test_image_labelled_data_needs_with_image_labels(tmp_path: Path) -> None:
    from decola_core.data.loader import TrainData
    from decola_core.data.toy import ensure_toy_dataset

    ensure_toy_dataset(tmp_path)
    recipe = load_recipe("toy/DECOLA_PHASE2_Toy", ["model.with_image_labels=false"])
    with pytest.raises(ConfigError, match="model.with_image_labels is false"):
        TrainData(recipe, tmp_path)


def test_focal_alpha_and_input_format_reach_the_model(toy_data_root: Path) -> None:
    default = build_model(load_recipe(TOY), data_root=toy_data_root)
    changed = build_model(
        load_recipe(TOY, ["model.loss.focal_alpha=0.5", "data.format=BGR"]),
        data_root=toy_data_root,
    )
    assert default.criterion.focal_alpha == 0.25 and default.criterion.matcher.alpha == 0.25
    assert changed.criterion.focal_alpha == 0.5 and changed.criterion.matcher.alpha == 0.5
    image = torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8)
    assert torch.equal(
        changed.preprocess([image]).tensor, default.preprocess([image.flip(0)]).tensor
    )


def test_the_baseline_refuses_a_linear_classifier(toy_data_root: Path) -> None:
    recipe = load_recipe("toy/BoxSup-DeformDETR_Toy", ["model.classifier.use_zeroshot=false"])
    with pytest.raises(ConfigError, match="use_zeroshot"):
        build_model(recipe, data_root=toy_data_root)


def test_gradient_clipping_uses_the_norm_type() -> None:
    def clipped(norm_type: float) -> list[float]:
        params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
        params[0].grad, params[1].grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
        model = torch.nn.ParameterList(params)
        solver = SolverConfig(
            clip_gradients={
                "enabled": True,
                "type": "full_model",
                "value": 1.0,
                "norm_type": norm_type,
            }
        )
        clip_gradients(model, solver)
        return [round(float(v), 4) for p in params for v in p.grad]

    assert clipped(2.0) == [0.6, 0.0, 0.0, 0.8]  # total L2 norm 5 -> 1
    assert clipped(float("inf")) == [0.75, 0.0, 0.0, 1.0]  # max norm 4 -> 1


def test_self_label_defaults_come_from_the_recipe(tmp_path: Path) -> None:
    from decola_core.pseudo.self_label import resolve_job

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    (tmp_path / "info.json").write_text("{}")
    recipe = load_recipe(
        TOY,
        [
            "self_label.min_sizes=[96,128]",
            "self_label.prediction_name=labels_v1",
            "test.max_size=321",
            "test.batch_size=3",
            f"output_dir={tmp_path / 'runs'}",
        ],
    )
    job = resolve_job(
        SelfLabelJob(
            recipe=recipe, weights=weights, image_info=tmp_path / "info.json", image_root=tmp_path
        )
    )
    assert (job.min_sizes, job.max_size, job.batch_size) == ([96, 128], 321, 3)
    assert job.output_dir == tmp_path / "runs" / "labels_v1"
    explicit = resolve_job(
        SelfLabelJob(
            recipe=recipe,
            weights=weights,
            image_info=tmp_path / "info.json",
            image_root=tmp_path,
            min_sizes=[200],
            max_size=400,
            batch_size=1,
            output_dir=tmp_path / "mine",
        )
    )
    assert (explicit.min_sizes, explicit.max_size, explicit.batch_size) == ([200], 400, 1)
    assert explicit.output_dir == tmp_path / "mine"


def test_test_conditioned_prompts_every_class(tmp_path: Path) -> None:
    """test.conditioned without the oracle: every image is prompted with all classes."""
    from PIL import Image

    from decola_core.evaluation.runner import predict_shard
    from decola_core.modeling.postprocess import Detections

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 4, 4]}],
        "categories": [{"id": 5, "name": "x"}, {"id": 7, "name": "y"}, {"id": 9, "name": "z"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(data))
    dataset = LvisDataset(tmp_path / "gt.json", tmp_path)
    asked = []

    def predictor(images, classes=None):
        asked.append(None if classes is None else list(classes))
        empty = torch.zeros(0, 4)
        return [Detections(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), (8, 8))]

    for conditioned, every in ((False, False), (True, False), (False, True)):
        predict_shard(
            predictor,
            dataset,
            tmp_path / "shard.jsonl",
            conditioned=conditioned,
            prompt_every_class=every,
            indices=range(1),
        )
    assert asked == [None, [1], [0, 1, 2]]
