"""Unit tests of the network pieces on the CPU-sized toy recipe."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch

from decola_core.config import load_recipe
from decola_core.modeling import build_model, load_weights, postprocess
from decola_core.modeling.criterion import sigmoid_focal_loss, total_loss
from decola_core.modeling.decola.criterion import DecolaCriterion
from decola_core.modeling.detector import DetectorOutput
from decola_core.modeling.matcher import HungarianMatcher
from decola_core.modeling.predictor import Predictor, resize_shortest_edge
from decola_core.modeling.prompts import oracle_prompts, prompt_chunks, training_prompts
from decola_core.modeling.pseudo_labels import Teacher, select_pseudo_boxes
from decola_core.modeling.transformer import QueryGrouping
from decola_core.structures.boxes import (
    box_cxcywh_to_xyxy,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    generalized_box_iou,
)


def images(seed: int = 0, sizes=((128, 112), (96, 128))) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in sizes]


@pytest.fixture()
def toy_model(toy_data_root):
    torch.manual_seed(0)
    return build_model(load_recipe("toy/DECOLA_PHASE1_Toy"), data_root=toy_data_root)


def group_members(grouping: QueryGrouping, batch: int = 1) -> list[set[int]]:
    queries = grouping.num_prompts * grouping.per_prompt
    ids = torch.arange(queries, dtype=torch.float32).view(1, queries, 1).expand(batch, -1, 1)
    rolled = grouping.roll(ids.contiguous())
    return [set(map(int, row[:, 0].tolist())) for row in rolled[: rolled.shape[0] // batch]]


def test_grouped_attention_reproduces_the_original_groups() -> None:
    # q = i * K + k; groups are {q : q mod n = j}
    for k, n in ((3, 6), (7, 6), (1, 4), (4, 2)):
        groups = group_members(QueryGrouping(k, n, "grouped"))
        assert sorted(map(sorted, groups)) == sorted(
            sorted(q for q in range(k * n) if q % n == j) for j in range(n)
        )
    prompts_in = [{q % 3 for q in g} for g in group_members(QueryGrouping(3, 6, "grouped"))]
    assert all(len(p) == 1 for p in prompts_in)  # K divides n: one prompt per group
    prompts_in = [{q % 7 for q in g} for g in group_members(QueryGrouping(7, 6, "grouped"))]
    assert all(len(p) == 7 for p in prompts_in)  # gcd 1: every group mixes all prompts


def test_block_diagonal_attention_groups_by_prompt() -> None:
    groups = group_members(QueryGrouping(7, 6, "block_diagonal"))
    assert sorted(map(sorted, groups)) == [
        sorted(q for q in range(42) if q % 7 == k) for k in range(7)
    ]


@pytest.mark.parametrize("mode", ["grouped", "block_diagonal"])
def test_roll_unroll_is_identity(mode: str) -> None:
    grouping = QueryGrouping(5, 4, mode)
    x = torch.randn(2, 20, 3)
    assert torch.equal(grouping.unroll(grouping.roll(x)), x)


def test_box_conversions_and_giou() -> None:
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0]])
    assert torch.allclose(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(xyxy)), xyxy)
    assert torch.allclose(box_xywh_to_xyxy(box_xyxy_to_xywh(xyxy)), xyxy)
    assert torch.allclose(box_xyxy_to_xywh(xyxy), torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
    far = torch.tensor([[20.0, 20.0, 21.0, 21.0]])
    giou = generalized_box_iou(torch.cat([xyxy, far]), xyxy)
    assert giou[0, 0] == pytest.approx(1.0)
    assert -1.0 < giou[1, 0] < 0.0


def test_focal_loss_matches_its_formula() -> None:
    logits = torch.tensor([[[2.0], [-1.0]], [[0.5], [0.0]]])
    targets = torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]])
    p = logits.sigmoid()
    ce = -(targets * p.log() + (1 - targets) * (1 - p).log())
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = 0.25 * targets + 0.75 * (1 - targets)
    expected = (alpha_t * ce * (1 - p_t) ** 2).sum() / 3.0
    got = sigmoid_focal_loss(logits, targets, num_boxes=3.0) * logits.shape[1]
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_per_prompt_matching_is_optimal_and_class_aware() -> None:
    gen = torch.Generator().manual_seed(3)
    prompts = torch.tensor([[4, 4, 4, 9, 9, 9]])
    logits = torch.randn(1, 6, 1, generator=gen)
    boxes = torch.rand(1, 6, 4, generator=gen) * 0.5 + 0.25
    target = {
        "labels": torch.tensor([9, 4, 9]),
        "boxes": torch.rand(3, 4, generator=gen) * 0.5 + 0.25,
    }
    matcher = HungarianMatcher()
    ((queries, gts),) = matcher.match_per_prompt(logits, boxes, prompts, [target])
    assert all(prompts[0, q] == target["labels"][g] for q, g in zip(queries, gts, strict=True))
    assert sorted(gts.tolist()) == [0, 1, 2]
    # brute force over every class-respecting assignment
    from decola_core.modeling.matcher import focal_cost

    cost = (
        2 * focal_cost(logits[0, :, 0].sigmoid())[:, None]
        + 5 * torch.cdist(boxes[0], target["boxes"], p=1)
        - 2 * generalized_box_iou(box_cxcywh_to_xyxy(boxes[0]), box_cxcywh_to_xyxy(target["boxes"]))
    )
    best = min(
        sum(cost[q, g] for q, g in zip(perm, range(3), strict=True))
        for perm in itertools.permutations(range(6), 3)
        if all(prompts[0, q] == target["labels"][g] for q, g in zip(perm, range(3), strict=True))
    )
    assert float(sum(cost[q, g] for q, g in zip(queries, gts, strict=True))) == pytest.approx(
        float(best)
    )


def test_postprocess_keeps_one_result_per_image_and_respects_limits() -> None:
    logits = torch.tensor([[[3.0], [-2.0], [1.0]], [[-9.0], [-9.0], [-9.0]]])
    boxes = torch.full((2, 3, 4), 0.5)
    prompts = torch.tensor([[5, 6, 7], [5, 6, 7]])
    dets = postprocess(
        logits,
        boxes,
        [(100, 200), (50, 50)],
        prompt_inds=prompts,
        max_detections=2,
        score_threshold=0.5,
    )
    assert len(dets) == 2
    assert dets[0].labels.tolist() == [5, 7] and len(dets[1]) == 0  # empty image kept
    assert torch.allclose(dets[0].boxes[0], torch.tensor([50.0, 25.0, 150.0, 75.0]))
    many = postprocess(logits, boxes, [(1, 1)] * 2, prompt_inds=prompts, max_detections=300)
    assert len(many[0]) == 3  # class mode: k = min(max_detections, Q)
    obj = postprocess(
        torch.zeros(1, 3, 4),
        torch.full((1, 3, 4), 0.5),
        [(10, 10)],
        allowed_classes=[torch.tensor([2])],
    )
    assert set(obj[0].labels.tolist()) == {2} and len(obj[0]) == 3


def test_prompt_policies() -> None:
    assert training_prompts([torch.tensor([5, 2]), torch.tensor([2])], 8).tolist() == [2, 5]
    assert training_prompts([torch.tensor([3])], 8, image_labels=[torch.tensor([1])]).tolist() == [
        1,
        3,
    ]
    fallback = training_prompts([torch.zeros(0, dtype=torch.int64)], 8)
    assert fallback.numel() == 1 and 0 <= int(fallback) < 8
    assert oracle_prompts([torch.zeros(0, dtype=torch.int64)]) is None
    assert [c.tolist() for c in prompt_chunks(torch.arange(5), 2)] == [[0, 1], [2, 3], [4]]


def test_toy_model_class_and_object_mode_train(toy_model) -> None:
    recipe = load_recipe("toy/DECOLA_PHASE1_Toy")
    criterion = DecolaCriterion(
        enc_loss_per_prompt_topk=recipe.model.decola.enc_loss_per_prompt_topk,
        fed_loss_weight=toy_model.class_embed[-1].fed_loss_weight,
        fed_loss_num_classes=4,
    )
    targets = [
        {
            "labels": torch.tensor([1, 3]),
            "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]]),
        },
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]
    toy_model.train()
    out = toy_model(images(), training_prompts([t["labels"] for t in targets], 8))
    n = recipe.model.decola.per_prompt_topk
    assert out.pred_logits.shape == (2, n * 2, 1) and out.prompt_inds.shape == (2, n * 2)
    losses = criterion(out, targets)
    assert {"loss_ce", "loss_bbox_enc", "loss_giou_0", "loss_ce_weak_data", "loss_zero"} <= set(
        losses
    )
    total_loss(losses).backward()
    assert toy_model.transformer.pix_trans.weight.grad is not None
    toy_model.zero_grad()
    out = toy_model(images())  # object mode
    assert out.pred_logits.shape == (2, recipe.model.transformer.num_queries, 8)
    losses = criterion(out, targets, weak=True)
    assert losses["loss_ce"].item() == 0.0 and losses["loss_ce_weak_data"].item() > 0.0
    assert torch.isfinite(total_loss(losses))


def test_too_few_tokens_is_a_clear_error(toy_model) -> None:
    toy_model.eval()
    with pytest.raises(ValueError, match="fewer than per_prompt_topk"):
        toy_model([torch.zeros(3, 8, 8, dtype=torch.uint8)], torch.tensor([1]))


def test_predictor_resizes_and_maps_boxes_back(toy_model) -> None:
    predictor = Predictor(toy_model, min_size=128, max_size=192, max_detections=5)
    big = images(sizes=((256, 384),))
    dets = predictor(big, classes=[1, 2, 3])
    assert len(dets) == 1 and len(dets[0]) == 5 and dets[0].image_size == (256, 384)
    assert set(dets[0].labels.tolist()) <= {1, 2, 3}
    assert float(dets[0].boxes[:, 2].max()) <= 384 * 1.01
    chunked = Predictor(toy_model, min_size=128, max_size=192, max_detections=5, prompt_chunk=1)
    assert len(chunked(big, classes=[1, 2, 3])[0]) == 5
    assert len(predictor(big)[0]) == 5  # object mode
    assert resize_shortest_edge(big[0], 128, 192).shape[1:] == (128, 192)


def test_pseudo_boxes_pick_one_box_per_label() -> None:
    prompts = torch.tensor([[1, 2, 1, 2]])
    logits = torch.tensor([[[0.1], [0.9], [2.0], [-1.0]]])
    boxes = torch.tensor(
        [[[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.1, 0.0], [0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.3, 0.2]]]
    )
    out = DetectorOutput(logits, boxes, prompts)
    best = select_pseudo_boxes(out, [torch.tensor([1, 2])])[0]
    assert best.labels.tolist() == [1]  # label 2's best-scoring box has zero height: dropped
    assert torch.allclose(best.boxes[0], boxes[0, 2])
    assert torch.allclose(best.scores[0], logits[0, 2, 0].sigmoid())
    largest = select_pseudo_boxes(out, [torch.tensor([1, 2])], choice="max-size")[0]
    assert largest.labels.tolist() == [1, 2]
    assert torch.allclose(largest.boxes[0], boxes[0, 0]) and torch.allclose(
        largest.boxes[1], boxes[0, 3]
    )
    filtered = select_pseudo_boxes(out, [torch.tensor([1])], min_area=0.05)[0]
    assert torch.allclose(filtered.boxes[0], boxes[0, 0])  # the higher-scoring box is too small


def test_teacher_is_frozen_and_not_part_of_the_student(toy_model) -> None:
    teacher = Teacher(toy_model, per_prompt_topk=5)
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert toy_model.transformer.per_prompt_topk == 10  # the student is untouched
    result = teacher(images(), [torch.tensor([2]), torch.tensor([4, 5])])
    assert [r.labels.tolist() for r in result] == [[2], [4, 5]]
    assert all(
        k.startswith(("backbone", "input_proj", "transformer", "class_embed", "bbox_embed"))
        for k in toy_model.state_dict()
    )


def test_checkpoint_embeddings_never_silently_replace_the_file(toy_model, caplog) -> None:
    state = {k: v.clone() for k, v in toy_model.state_dict().items()}
    for key in [k for k in state if k.endswith("zs_weight")]:
        state[key] = torch.randn_like(state[key])
    before = toy_model.class_embed[0].zs_weight.clone()
    with caplog.at_level(logging.WARNING):
        report = load_weights(toy_model, state)
    assert report.notes and "file's embeddings are used" in caplog.text
    assert torch.equal(toy_model.class_embed[0].zs_weight, before)


def test_baseline_builds_and_runs(toy_data_root) -> None:
    model = build_model(load_recipe("toy/BoxSup-DeformDETR_Toy"), data_root=toy_data_root).eval()
    with torch.no_grad():
        out = model(images())
    assert out.pred_logits.shape == (2, 30, 8) and out.prompt_inds is None
    with pytest.raises(ValueError, match="no class mode"):
        model(images(), torch.tensor([1]))
    dets = Predictor(model, min_size=128, max_size=192)(images(), classes=[3])
    assert all(set(d.labels.tolist()) <= {3} for d in dets)


def test_swin_backbone_shapes_and_names() -> None:
    from decola_core.modeling.backbone.swin import SwinTransformer

    swin = SwinTransformer.from_size("T", [1, 2, 3]).eval()
    with torch.no_grad():
        out = swin(torch.randn(1, 3, 70, 90))  # not a multiple of the patch or window size
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "swin1": (192, 9, 12),
        "swin2": (384, 5, 6),
        "swin3": (768, 3, 3),
    }
    names = dict(swin.named_parameters())
    assert "layers.0.blocks.1.attn.relative_position_bias_table" in names
    assert "layers.2.downsample.reduction.weight" in names and "norm3.weight" in names
    mask = swin.layers[0].shift_mask(14, 14, "cpu")
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    assert torch.equal(mask, mask.transpose(1, 2))


def test_resnet_freeze_at_and_frozen_batch_norm() -> None:
    from torchvision.ops.misc import FrozenBatchNorm2d

    from decola_core.modeling.backbone.resnet import ResNetBody

    body = ResNetBody("resnet18", [3, 4], freeze_at=2)
    assert not body.base.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in body.base.layer1.parameters())
    assert all(p.requires_grad for p in body.base.layer2.parameters())
    assert isinstance(body.base.bn1, FrozenBatchNorm2d) and not hasattr(body.base, "layer4")
    out = body(torch.randn(1, 3, 64, 64))
    assert {k: v.shape[1] for k, v in out.items()} == {"layer3": 128, "layer4": 256}


def test_baseline_losses_and_max_size_loss(toy_data_root) -> None:
    from decola_core.modeling.boxsup.criterion import BaselineCriterion, max_size_loss

    model = build_model(load_recipe("toy/BoxSup-DeformDETR_Toy"), data_root=toy_data_root).train()
    criterion = BaselineCriterion(fed_loss_weight=model.fed_loss_weight, fed_loss_num_classes=4)
    targets = [
        {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.4, 0.4, 0.2, 0.3]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]
    out = model(images())
    losses = criterion(out, targets, generator=torch.Generator().manual_seed(0))
    assert losses["loss_image"].item() == 0.0 and losses["loss_bbox"].item() > 0
    assert {"loss_ce_enc", "loss_giou_0", "class_error"} <= set(losses)
    total_loss(losses).backward()
    weak = criterion(
        model(images()),
        [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2,
        image_labels=[torch.tensor([1]), torch.tensor([3, 5])],
    )
    assert weak["loss_image"].item() > 0 and weak["loss_bbox"].item() == 0.0
    # the max-size loss by hand: one layer, image 0 label 1 on the query with the largest box
    logits = torch.zeros(1, 2, 4)
    boxes = torch.tensor([[[0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5]]])
    logits[0, 1, 1] = 2.0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[0, 1], torch.tensor([0.0, 1.0, 0.0, 0.0]), reduction="sum"
    )
    assert max_size_loss([(logits, boxes)], [torch.tensor([1])]).item() == pytest.approx(
        expected.item()
    )


def test_detectron2_resnet_backbone_and_pickled_weights(tmp_path) -> None:
    import pickle

    import numpy as np

    from decola_core.errors import DecolaError
    from decola_core.modeling.backbone.d2_resnet import D2ResNet
    from decola_core.modeling.checkpoint import read_state_dict, to_native

    body = D2ResNet(50, ["res3", "res4", "res5"], stride_in_1x1=False, freeze_at=2).eval()
    out = body(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "res3": (512, 8, 12),
        "res4": (1024, 4, 6),
        "res5": (2048, 2, 3),
    }
    assert body.res3[0].conv2.stride == (2, 2) and body.res3[0].conv1.stride == (1, 1)
    assert not any(p.requires_grad for p in body.res2.parameters())
    names = set(body.state_dict())
    assert {
        "stem.conv1.weight",
        "stem.conv1.norm.running_var",
        "res2.0.shortcut.weight",
        "res5.2.conv3.norm.bias",
    } <= names
    pkl = tmp_path / "R-50.pkl"
    arrays = {k: v.numpy() for k, v in body.state_dict().items()}
    pkl.write_bytes(pickle.dumps({"model": arrays, "__author__": "torchvision"}))
    with pytest.raises(DecolaError, match="pickles"):
        read_state_dict(pkl)
    native, fmt, _ = to_native(read_state_dict(pkl, trusted=True))
    assert fmt == "detectron2-resnet"
    assert np.allclose(
        native["backbone.0.backbone.res2.0.conv1.weight"].numpy(), arrays["res2.0.conv1.weight"]
    )


def test_ablation_options(toy_data_root) -> None:
    from decola_core.errors import ConfigError

    recipe = load_recipe(
        "toy/DECOLA_PHASE1_Toy",
        [
            "model.decola.use_prompt_embed_as_query=true",
            "model.decola.encoder_checkpoint=true",
            "model.decola.decoder_checkpoint=true",
            "model.decola.decoder_self_attention=block_diagonal",
        ],
    )
    model = build_model(recipe, data_root=toy_data_root).train()
    assert model.transformer.prompt_embed_trans is not None
    out = model(images(), torch.tensor([1, 2]))
    out.pred_logits.sum().backward()
    assert model.transformer.prompt_embed_trans.weight.grad is not None
    assert model.transformer.encoder.layers[0].linear1.weight.grad is not None  # checkpointed
    model.zero_grad()
    model(images()).pred_logits.sum().backward()  # object mode uses the "a object" row
    bad = load_recipe("toy/DECOLA_PHASE1_Toy", ["model.decola.multi_class_second_stage=true"])
    with pytest.raises(ConfigError, match="multi_class_second_stage"):
        build_model(bad, data_root=toy_data_root)


def test_predictor_class_names_save_and_teacher_from_weights(
    toy_model, toy_data_root, tmp_path
) -> None:
    from decola_core.modeling.checkpoint import save_weights

    names = [f"shape{i}" for i in range(8)]
    predictor = Predictor(
        toy_model, min_size=128, max_size=192, max_detections=3, class_names=names
    )
    dets = predictor(images(sizes=((128, 128),)), classes=["shape2", 5])
    assert set(dets[0].labels.tolist()) <= {2, 5}
    with pytest.raises(ValueError, match="did you mean 'shape2'"):
        predictor(images(sizes=((128, 128),)), classes=["shpe2"])
    path = save_weights(toy_model, tmp_path / "ckpt" / "model.pth", iteration=7)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pth"]
    assert torch.load(path)["iteration"] == 7
    teacher = Teacher.from_weights(
        load_recipe("toy/DECOLA_PHASE1_Toy"), path, data_root=toy_data_root
    )
    for a, b in zip(teacher.model.parameters(), toy_model.parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
