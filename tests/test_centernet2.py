"""The CenterNet2 family without reference data: its NMS and box coder against their
definitions, and a tiny model built from a shipped C2 recipe that trains and detects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

from decola_core.config import load_recipe
from decola_core.modeling import TrainStep, build_model
from decola_core.modeling.centernet2.boxes import BoxCoder, per_class_nms
from decola_core.modeling.centernet2.roi_heads import GroundTruth

TINY = [
    "model.backbone.name=resnet18",
    "model.fpn.out_channels=64",
    "model.roi_heads.fc_dim=32",
    "model.roi_heads.mask_conv_dim=16",
    "model.roi_heads.batch_size_per_image=16",
    "model.roi_heads.image_label_proposals=8",
    "model.centernet.pre_nms_topk_train=64",
    "model.centernet.post_nms_topk_train=16",
    "model.centernet.pre_nms_topk_test=64",
    "model.centernet.post_nms_topk_test=16",
    "model.classifier.num_classes=8",
    "model.classifier.embed_dim=64",
    "model.classifier.embeddings=toy/toy_clip_a+cname.npy",
    "model.classifier.category_info=toy/annotations/toy_train.json",
    "model.loss.fed_loss_num_classes=4",
]


@pytest.mark.parametrize("n", [0, 1, 7, 400, 3000])
def test_per_class_nms_equals_torchvision(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 80 + 1], 1)
    scores = torch.rand(n, generator=gen)
    classes = torch.randint(0, 50, (n,), generator=gen)
    assert torch.equal(
        per_class_nms(boxes, scores, classes, 0.5), batched_nms(boxes, scores, classes, 0.5)
    )


def test_box_coder_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    source = torch.tensor([[10.0, 20.0, 50.0, 90.0], [0.0, 0.0, 8.0, 8.0]])
    target = source + torch.rand(2, 4, generator=gen) * 4
    for weights in ((10, 10, 5, 5), (30, 30, 15, 15)):
        coder = BoxCoder(weights)
        torch.testing.assert_close(coder.decode(coder.encode(source, target), source), target)


def _ellipse(box: list[float]) -> list[np.ndarray]:
    x0, y0, x1, y1 = box
    angles = np.arange(16) * 2 * math.pi / 16
    ring = np.stack([(x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(angles),
                     (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(angles)], 1)  # fmt: skip
    return [ring.reshape(-1)]


@pytest.fixture()
def tiny(toy_data_root):
    torch.manual_seed(0)
    recipe = load_recipe("DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x+Detic", TINY)
    return build_model(recipe, data_root=toy_data_root)


def test_tiny_c2_trains_on_box_and_image_batches(tiny) -> None:
    gen = torch.Generator().manual_seed(1)
    images = [
        torch.randint(0, 256, (3, 96, 128), generator=gen, dtype=torch.uint8) for _ in range(2)
    ]
    boxes = [[[8.0, 10.0, 60.0, 70.0], [50.0, 20.0, 120.0, 90.0]], [[30.0, 30.0, 90.0, 80.0]]]
    targets = [
        GroundTruth(torch.tensor(b), torch.arange(len(b)), [_ellipse(x) for x in b], [1, 2])
        for b in boxes
    ]
    tiny.train()
    losses = tiny.forward_train(images, targets, ann_type="box")
    assert {"loss_mask", "loss_centernet_loc", "loss_cls_stage2", "image_loss_stage0"} <= set(
        losses
    )
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_mask"]) > 0 and float(losses["image_loss_stage0"]) == 0
    sum(losses.values()).backward()
    assert tiny.roi_heads.mask_head.predictor.weight.grad is not None
    tiny.zero_grad(set_to_none=True)
    weak = tiny.forward_train(images, targets, ann_type="image")
    assert float(weak["image_loss_stage0"]) > 0 and float(weak["loss_centernet_loc"]) == 0
    sum(weak.values()).backward()
    assert tiny.roi_heads.mask_head.predictor.weight.grad is None  # no mask loss on image data
    # the trainer's batch format (normalised cxcywh boxes) reaches the same loss terms
    cxcywh = [
        {"labels": t.classes, "boxes": torch.cat([(t.boxes[:, :2] + t.boxes[:, 2:]) / 2,
                                                 t.boxes[:, 2:] - t.boxes[:, :2]], 1)
         / torch.tensor([128.0, 96.0, 128.0, 96.0])}
        for t in targets
    ]  # fmt: skip
    step = TrainStep(images, cxcywh, [], False, torch.Generator(), np.random.default_rng(0))
    assert set(tiny.training_step(step)) == set(losses)


def test_tiny_c2_detects_boxes_and_masks_in_any_vocabulary(tiny) -> None:
    tiny.eval()
    image = torch.randint(0, 256, (3, 96, 128), generator=torch.Generator().manual_seed(2),
                          dtype=torch.uint8)  # fmt: skip
    (dets,) = tiny.detect([image], [(192, 256)], max_detections=20)
    assert 0 < len(dets) <= 20 and dets.image_size == (192, 256)
    assert dets.masks.shape == (len(dets), 192, 256) and dets.masks.dtype == torch.bool
    assert float(dets.boxes[:, 2].max()) <= 256 and float(dets.boxes[:, 3].max()) <= 192
    (only,) = tiny.detect([image], [(96, 128)], allowed_classes=[torch.tensor([3])])
    assert set(only.labels.tolist()) <= {3}
    tiny.set_vocabulary(torch.randn(3, 64))
    (custom,) = tiny.detect([image], [(96, 128)])
    assert tiny.num_classes == 3 and set(custom.labels.tolist()) <= {0, 1, 2}


def test_model_evaluation_of_a_c2_model_scores_boxes_and_masks(
    decola, tiny, toy_data_root, tmp_path
) -> None:
    """``decola eval`` with a C2 checkpoint over a polygon-annotated set: the predictions
    carry RLE masks at each image's size, and mask AP is written beside box AP."""
    import json

    from PIL import Image

    from decola_core.config import dump_recipe
    from decola_core.evaluation.lvis_eval import GroundTruth as Truth
    from decola_core.evaluation.segm_eval import evaluate_segm
    from decola_core.modeling.checkpoint import save_weights

    recipe = load_recipe("DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x+Detic", TINY)
    (tmp_path / "tiny.yaml").write_text(dump_recipe(recipe))
    weights = save_weights(tiny, tmp_path / "tiny.pth")
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    gen = np.random.default_rng(0)
    images, annotations = [], []
    for i, (h, w) in enumerate(((96, 128), (120, 90)), start=1):
        Image.fromarray(gen.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            images_dir / f"{i}.png"
        )
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w,
                       "neg_category_ids": [], "not_exhaustive_category_ids": []})  # fmt: skip
        polygon = _ellipse([10.0, 12.0, 70.0, 80.0])[0].tolist()
        annotations.append({"id": i, "image_id": i, "category_id": i, "bbox": [10, 12, 60, 68],
                            "area": 60.0 * 68, "segmentation": [polygon]})  # fmt: skip
    categories = [{"id": c + 1, "name": f"shape{c}", "frequency": "cfr"[c % 3]} for c in range(8)]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    out = tmp_path / "eval"
    result = decola(
        "eval", "--config", str(tmp_path / "tiny.yaml"), "--weights", str(weights),
        "--annotations", str(tmp_path / "gt.json"), "--images", str(images_dir),
        "--data-root", str(toy_data_root), "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mask AP" in result.stdout
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions and all(isinstance(p["segmentation"]["counts"], str) for p in predictions)
    sizes = {i["id"]: [i["height"], i["width"]] for i in images}
    assert all(p["segmentation"]["size"] == sizes[p["image_id"]] for p in predictions)
    segm = json.loads((out / "metrics_segm.json").read_text())
    reference = evaluate_segm(Truth(gt), predictions, max_dets=300, backend="lvis-api")
    assert segm["AP"] == pytest.approx(reference.metrics["AP"], abs=1e-6)


def test_masks_computed_once_per_roi_equal_per_detection_masks(tiny) -> None:
    """Detections of one RoI share its box, so one mask per RoI serves all its classes: the
    result equals running the mask head on every detection's box."""
    tiny.eval()
    image = torch.randint(0, 256, (3, 96, 128), generator=torch.Generator().manual_seed(3),
                          dtype=torch.uint8)  # fmt: skip
    with torch.no_grad():
        (result,) = tiny.forward_test([image], max_detections=50)
        assert len(torch.unique(result.rois)) < len(result.rois)  # classes share RoIs here
        batch, _ = tiny.preprocess([image])
        features = tiny.features(batch)
        heads = tiny.roi_heads
        pooled = heads.mask_pooler([features[f] for f in tiny.roi_features], [result.boxes])
        every = heads.mask_head(pooled).sigmoid()
    torch.testing.assert_close(result.mask_probs, every)


@pytest.mark.parametrize("num_rois", [0, 1, 40, 600])
def test_roi_align_equals_torchvision_forward_and_backward(num_rois: int) -> None:
    """The CPU RoIAlign (sparse weights) against torchvision's kernel, with boxes inside,
    across and outside the map, empty and large, on several images."""
    from torchvision.ops import roi_align as reference

    from decola_core.modeling.ops.roi_align import roi_align

    gen = torch.Generator().manual_seed(num_rois)
    features = torch.randn(3, 16, 20, 24, generator=gen, requires_grad=True)
    xy = torch.rand(num_rois, 2, generator=gen) * 220 - 30
    wh = torch.rand(num_rois, 2, generator=gen) * 150
    wh[: num_rois // 10] = 0  # empty boxes
    rois = torch.cat([torch.randint(0, 3, (num_rois, 1), generator=gen).float(), xy, xy + wh], 1)
    weights = torch.randn(num_rois, 16, 7, 7, generator=gen)
    mine = roi_align(features, rois, 7, 1 / 8)
    (grad_mine,) = torch.autograd.grad((mine * weights).sum(), features)
    theirs = reference(features, rois, 7, 1 / 8, 0, aligned=True)
    (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), features)
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_mine, grad_theirs, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_with_other_class_embeddings_keeps_the_recipes(tiny) -> None:
    """As for the DETR models: the recipe's embedding file wins over a checkpoint's copy, a
    different vocabulary size is skipped by shape, and both are reported."""
    from decola_core.modeling import load_weights

    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    own = tiny.roi_heads.box_predictor[0].cls_score.zs_weight.clone()
    key = "roi_heads.box_predictor.0.cls_score.zs_weight"
    state[key] = torch.randn_like(state[key])
    report = load_weights(tiny, state)
    assert report.notes == [key] and not report.missing and not report.unexpected
    assert torch.equal(tiny.roi_heads.box_predictor[0].cls_score.zs_weight, own)
    state[key] = torch.randn(64, 11)  # ten classes and background
    report = load_weights(tiny, state)
    assert [k for k, _, _ in report.shape_mismatch] == [key]
