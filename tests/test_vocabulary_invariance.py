"""The vocabulary rule (README "Vocabulary: what a class's detections depend on"), tested on
the toy phase-1 architecture with fixed random weights, with no detection budget cut unless a
test cuts it:

- object mode: a class's detections do not depend on the other classes or their order;
- class mode, ``block_diagonal`` decoder self-attention: a prompt's detections do not depend on
  the other prompts or their order;
- class mode, ``grouped`` (the released models): they do not depend on the order of the prompts
  when their number K divides the per-prompt query count N; they change with K.
- in every mode the final top-M over all (query, class) pairs can only drop a class's
  detections, never change them.
"""

from __future__ import annotations

import pytest
import torch

from decola_core.config import load_recipe
from decola_core.data.images import read_image
from decola_core.modeling.predictor import Predictor

NAMES = [f"class{i}" for i in range(8)]


def predictor(data_root, weights, attention: str = "grouped") -> Predictor:
    recipe = load_recipe(
        "toy/DECOLA_PHASE1_Toy", [f"model.decola.decoder_self_attention={attention}"]
    )
    return Predictor.from_recipe(recipe, weights, data_root=data_root)


def detections(p: Predictor, image, names, table, prompts=None, budget=100_000):
    """{class name: (boxes, scores) sorted by score} with vocabulary ``names`` (rows of
    ``table``), prompted with ``prompts`` (names) or in object mode."""
    p.use_vocabulary(names, torch.stack([table[n] for n in names]))
    p.max_detections, p.score_threshold = budget, 0.0
    ids = None if prompts is None else [names.index(n) for n in prompts]
    det = p([image], ids)[0]
    out = {}
    for i, name in enumerate(names):
        keep = det.labels == i
        order = det.scores[keep].argsort(descending=True, stable=True)
        out[name] = (det.boxes[keep][order], det.scores[keep][order])
    return out


def assert_same(a, b) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def setting(toy_model):
    data_root, _, weights = toy_model
    torch.manual_seed(3)
    table = {n: torch.randn(64) * 4 for n in [*NAMES, "extra0", "extra1", "extra2", "extra3"]}
    image = read_image(data_root / "toy" / "images" / "toy_val_0001.png")
    return data_root, weights, table, image


def test_object_mode_a_class_does_not_depend_on_the_vocabulary(setting) -> None:
    data_root, weights, table, image = setting
    p = predictor(data_root, weights)
    base = detections(p, image, NAMES, table)
    permuted = detections(p, image, NAMES[::-1], table)
    larger = detections(p, image, ["extra0", *NAMES[3:], "extra1", *NAMES[:3]], table)
    for name in NAMES:
        assert len(base[name][1]) > 0
        assert_same(base[name], permuted[name])
        assert_same(base[name], larger[name])
    # with a budget, more classes can only push a class's weakest detections out
    cut = detections(p, image, [*NAMES, "extra0", "extra1"], table, budget=20)
    for name in NAMES:
        n = len(cut[name][1])
        assert_same(cut[name], (base[name][0][:n], base[name][1][:n]))


def test_class_mode_block_diagonal_a_prompt_does_not_depend_on_the_others(setting) -> None:
    data_root, weights, table, image = setting
    p = predictor(data_root, weights, "block_diagonal")
    alone = detections(p, image, NAMES, table, prompts=["class2"])
    for prompts in (["class2", "class5"], ["class5", "class2"], ["class7", "class2", "class0"]):
        assert_same(alone["class2"], detections(p, image, NAMES, table, prompts)["class2"])
    # the order of the vocabulary itself does not matter either
    flipped = detections(p, image, NAMES[::-1], table, prompts=["class2", "class5"])
    assert_same(alone["class2"], flipped["class2"])


def test_class_mode_grouped_depends_on_the_prompt_count_not_order(setting) -> None:
    data_root, weights, table, image = setting
    p = predictor(data_root, weights, "grouped")
    # K = 2 divides N: each self-attention group holds the queries of one prompt
    assert p.model.transformer.per_prompt_topk % 2 == 0
    a = detections(p, image, NAMES, table, prompts=["class2", "class5"])
    b = detections(p, image, NAMES, table, prompts=["class5", "class2"])
    assert_same(a["class2"], b["class2"])
    assert_same(a["class5"], b["class5"])
    # K = 1 (no other query to attend to) gives other detections than K = 2
    alone = detections(p, image, NAMES, table, prompts=["class2"])
    assert not torch.allclose(alone["class2"][1], a["class2"][1], atol=1e-4)
