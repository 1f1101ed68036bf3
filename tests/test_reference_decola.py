"""DECOLA against the original model's outputs (shared/reference): built from the original
YAML through the importer, weights through the user-facing loader; every size, K and N is read
from the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from decola_core.config.importer import import_original
from decola_core.modeling import build_model, load_weights, postprocess
from decola_core.modeling.criterion import total_loss
from decola_core.modeling.decola.criterion import DecolaCriterion
from decola_core.structures.boxes import box_xyxy_to_cxcywh

pytestmark = pytest.mark.reference
RTOL = ATOL = 1e-4


@pytest.fixture(scope="module")
def ref(reference_dir: Path):
    recipe = import_original(reference_dir / "golden_phase1_small.yaml").recipe
    model = build_model(recipe, data_root=reference_dir)
    report = load_weights(model, reference_dir / "golden_phase1_small.pth")
    assert not report.missing and not report.unexpected and not report.shape_mismatch
    assert not report.notes  # the checkpoint's embeddings equal the metadata files
    return {
        "recipe": recipe,
        "model": model,
        "inputs": torch.load(reference_dir / "golden_inputs.pt"),
        "gold": torch.load(reference_dir / "golden_outputs.pt"),
        "meta": json.loads((reference_dir / "golden_meta.json").read_text()),
    }


def batch(ref, name: str):
    inputs = ref["inputs"]
    idx = inputs["batches"][name]
    images = [inputs["images"][i] for i in idx]
    targets = []
    for i in idx:
        h, w = inputs["images"][i].shape[1:]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        targets.append(
            {
                "labels": inputs["gt_classes"][i],
                "boxes": box_xyxy_to_cxcywh(inputs["gt_boxes"][i] / scale),
            }
        )
    sizes = [(int(inputs["heights"][i]), int(inputs["widths"][i])) for i in idx]
    return images, targets, sizes


def oracle_prompts(targets) -> torch.Tensor:
    return torch.unique(torch.cat([t["labels"] for t in targets]))


def close(mine: torch.Tensor, gold: torch.Tensor) -> None:
    if gold.dtype in (torch.int64, torch.bool):
        assert torch.equal(mine.to(gold.dtype), gold)
    else:
        torch.testing.assert_close(mine.to(gold.dtype), gold, rtol=RTOL, atol=ATOL)


def assert_same_detections(dets, gold, case: str, score_tol: float = 1e-5) -> None:
    """Equal detections; adjacent entries with (near-)equal scores may come in either order."""
    for i, det in enumerate(dets):
        g_scores = gold[f"{case}/det{i}/scores"]
        g_boxes, g_classes = gold[f"{case}/det{i}/boxes"], gold[f"{case}/det{i}/classes"]
        assert len(det) == len(g_scores)
        torch.testing.assert_close(det.scores, g_scores, rtol=RTOL, atol=score_tol)
        for j in range(len(det)):
            candidates = [
                k
                for k in (j - 1, j, j + 1)
                if 0 <= k < len(det)
                and abs(float(det.scores[j] - g_scores[k])) <= score_tol + RTOL * float(g_scores[k])
                and int(det.labels[j]) == int(g_classes[k])
                and torch.allclose(det.boxes[j], g_boxes[k], rtol=1e-4, atol=1e-3)
            ]
            assert candidates, f"{case} det{i}[{j}] has no counterpart"
        assert tuple(det.image_size) == tuple(int(v) for v in gold[f"{case}/det{i}/image_size"])


@pytest.mark.parametrize(
    "case", ["class_eval_AB", "class_eval_CA", "object_eval_AB", "object_eval_CA"]
)
def test_eval_outputs_and_intermediates(ref, case: str) -> None:
    model, gold = ref["model"].eval(), ref["gold"]
    images, targets, sizes = batch(ref, case.rsplit("_", 1)[1])
    class_mode = case.startswith("class")
    record: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = model(images, oracle_prompts(targets) if class_mode else None, record=record)
    close(out.pred_logits, gold[f"{case}/pred_logits"])
    close(out.pred_boxes, gold[f"{case}/pred_boxes"])
    if class_mode:
        close(out.prompt_inds, gold[f"{case}/prompt_inds"])
        close(out.transformer.first_stage.prompt_ids, gold[f"{case}/inter/first_stage_prompt_inds"])
    inter = f"{case}/inter/"
    for name in (
        "spatial_shapes",
        "valid_ratios",
        "mask_flatten",
        "first_stage_logits",
        "first_stage_topk_inds",
        "first_stage_box_delta",
        "dec_tgt_init",
        "dec_query_pos",
        "dec_reference_init",
        "dec_hs",
        "dec_inter_references",
    ):
        close(record[name], gold[inter + name])
    proposals = gold[inter + "output_proposals"]
    assert torch.equal(torch.isinf(record["output_proposals"]), torch.isinf(proposals))
    finite = torch.isfinite(proposals)
    close(record["output_proposals"][finite], proposals[finite])
    for name in ("enc_src_flatten", "enc_pos_flatten", "memory", "output_memory"):
        close(record[name].double().sum(-1), gold[inter + name + "_chansum"])
    for level in ref["recipe"].model.transformer.in_features:
        for kind in ("backbone", "backbone_mask"):
            stored, mine = gold[f"{inter}{kind}/{level}"], record[f"{kind}/{level}"]
            if stored.dim() == 1 and mine.dim() > 1:  # only the shape was stored for this case
                assert tuple(mine.shape) == tuple(stored.tolist())
            else:
                close(mine, stored)
    oracle = [torch.unique(t["labels"]) for t in targets]
    for suffix, allowed in (("", None), ("_oracle", oracle)):
        name = case.replace("_eval", f"_eval{suffix}")
        if f"{name}/det0/scores" not in gold:
            continue
        dets = postprocess(
            out.pred_logits,
            out.pred_boxes,
            sizes,
            prompt_inds=out.prompt_inds,
            max_detections=ref["recipe"].test.detections_per_image,
            allowed_classes=None if class_mode else allowed,
        )
        assert_same_detections(dets, gold, name)


@pytest.mark.parametrize("case", ["class_train_AB", "class_train_CA", "object_train_AB"])
def test_training_losses_gradients_and_matches(ref, case: str) -> None:
    model, gold, meta = ref["model"].train(), ref["gold"], ref["meta"]["cases"][case]
    recipe = ref["recipe"]
    images, targets, _ = batch(ref, case.rsplit("_", 1)[1])
    class_mode = case.startswith("class")
    criterion = DecolaCriterion(
        enc_loss_per_prompt_topk=recipe.model.decola.enc_loss_per_prompt_topk,
        fed_loss_weight=model.class_embed[-1].fed_loss_weight,
    )
    model.zero_grad()
    out = model(images, oracle_prompts(targets) if class_mode else None)
    matches: list = []
    subset = None if class_mode else gold[f"{case}/prompt_inds_all"]  # the original's random draw
    losses = criterion(out, targets, class_subset=subset, record_matches=matches)
    for key in meta["loss_keys"]:
        torch.testing.assert_close(losses[key], gold[f"{case}/loss/{key}"], rtol=RTOL, atol=1e-6)
    total = total_loss(losses)
    metric = float(losses["class_error"]) if "class_error" in losses else 0.0
    torch.testing.assert_close(total + metric, gold[f"{case}/loss_total"], rtol=RTOL, atol=1e-6)
    close(out.pred_logits.detach(), gold[f"{case}/pred_logits"])
    total.backward()
    params = dict(model.named_parameters(remove_duplicate=False))
    mine = torch.stack(
        [
            params[n.removeprefix("detr.")].grad.norm().double()
            for n in meta["grad_norm_param_names"]
        ]
    )
    torch.testing.assert_close(mine, gold[f"{case}/grad_norms"], rtol=RTOL, atol=1e-9)
    calls = {0: matches[0], 1: matches[1], 2: matches[-1]}  # last layer, aux 0, first stage
    for call, per_image in calls.items():
        for b, (queries, gts) in enumerate(per_image):
            assert torch.equal(queries, gold[f"{case}/matches/call{call}/img{b}/query_idx"])
            assert torch.equal(gts, gold[f"{case}/matches/call{call}/img{b}/gt_idx"])
    model.zero_grad()


@pytest.fixture(scope="module")
def boxsup(reference_dir: Path, ref):
    recipe = import_original(reference_dir / "golden_boxsup_small.yaml").recipe
    model = build_model(recipe, data_root=reference_dir).eval()
    report = load_weights(model, reference_dir / "golden_boxsup_small.pth")
    assert not report.missing and not report.unexpected and not report.shape_mismatch
    return {**ref, "recipe": recipe, "model": model}


@pytest.mark.parametrize("name", ["AB", "CA"])
def test_boxsup_baseline_eval(boxsup, name: str) -> None:
    gold = boxsup["gold"]
    images, targets, sizes = batch(boxsup, name)
    record: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = boxsup["model"](images, record=record)
    case = f"boxsup_eval_{name}"
    close(out.pred_logits, gold[f"{case}/pred_logits"])
    close(out.pred_boxes, gold[f"{case}/pred_boxes"])
    inter = f"{case}/inter/"
    close(record["first_stage_logits"][..., 0], gold[inter + "enc_pred_logits_ch0"])
    close(record["first_stage_logits"][:, :16], gold[inter + "enc_pred_logits_first16tokens"])
    for key in (
        "first_stage_topk_inds",
        "valid_ratios",
        "spatial_shapes",
        "dec_reference_init",
        "dec_hs",
        "dec_inter_references",
    ):
        close(record[key], gold[inter + key])
    close(record["memory"].double().sum(-1), gold[inter + "memory_chansum"])
    oracle = [torch.unique(t["labels"]) for t in targets]
    for suffix, allowed in (("", None), ("_oracle", oracle)):
        dets = postprocess(
            out.pred_logits,
            out.pred_boxes,
            sizes,
            allowed_classes=allowed,
            max_detections=boxsup["recipe"].test.detections_per_image,
        )
        assert_same_detections(dets, gold, f"boxsup_eval{suffix}_{name}")
