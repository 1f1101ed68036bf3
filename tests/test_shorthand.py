"""--phase/--dataset/--backbone/--baseline resolve to the released recipe names."""

from __future__ import annotations

import pytest

from decola_core.config import list_recipes
from decola_core.config.shorthand import recipe_for
from decola_core.errors import ConfigError


@pytest.mark.parametrize(
    ("selection", "name"),
    [
        ({"phase": 1}, "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x"),
        (
            {"phase": 1, "dataset": "lvis-base", "backbone": "r50-21k"},
            "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x",
        ),
        ({"phase": 1, "dataset": "lvis", "backbone": "swin-b"}, "DECOLA_PHASE1_L_CLIP_SwinB_4x"),
        ({"phase": 2, "dataset": "lvis"}, "DECOLA_PHASE2_LI_CLIP_R5021k_4x_ft4x"),
        (
            {"phase": 2, "backbone": "swin-b", "labels": "offline"},
            "DECOLA_PHASE2_LbaseI_CLIP_SwinB_4x_OFFLINE_ft4x",
        ),
        ({"baseline": "boxsup", "backbone": "r50-1k"}, "BoxSup-DeformDETR_Lbase_CLIP_R501k_4x"),
        ({"baseline": "boxsup", "backbone": "swin-l"}, "BoxSup-DeformDETR_Lbase_CLIP_SwinL_4x"),
        ({"baseline": "detic", "dataset": "lvis"}, "BoxSup+ST-DeformDETR_LI_CLIP_R5021k_4x_ft4x"),
        ({"phase": 1, "dataset": "toy"}, "toy/DECOLA_PHASE1_Toy"),
        ({"phase": 2, "dataset": "toy"}, "toy/DECOLA_PHASE2_Toy"),
        ({"baseline": "boxsup", "dataset": "toy"}, "toy/BoxSup-DeformDETR_Toy"),
        ({"baseline": "detic", "dataset": "toy"}, "toy/BoxSup+ST-DeformDETR_Toy"),
    ],
)
def test_shorthand_resolves_to_a_shipped_recipe(selection: dict, name: str) -> None:
    assert recipe_for(**selection) == name
    assert name in list_recipes()


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({}, "choose a recipe"),
        ({"phase": 1, "baseline": "boxsup"}, "one of them"),
        ({"phase": 3}, "--phase must be 1 or 2"),
        ({"phase": 1, "backbone": "swin-l"}, "available backbones: r50-21k, swin-b"),
        ({"phase": 1, "backbone": "vit"}, "--backbone must be one of"),
        ({"phase": 1, "dataset": "coco"}, "--dataset must be one of"),
        ({"phase": 1, "labels": "offline"}, "applies to --phase 2 only"),
        ({"phase": 1, "dataset": "toy", "backbone": "swin-b"}, "omit --backbone"),
        ({"baseline": "other"}, "--baseline must be boxsup or detic"),
    ],
)
def test_impossible_selections_are_explained(selection: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        recipe_for(**selection)
