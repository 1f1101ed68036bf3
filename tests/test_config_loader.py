"""Recipe files: _base_ inheritance, _delete_, dotted overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from decola_core.config import dump_recipe, load_recipe
from decola_core.config.loader import apply_overrides, find_recipe
from decola_core.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_inheritance_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    write(
        tmp_path / "base.yaml",
        "solver: {base_lr: 0.1, steps: [10, 20], max_iter: 30}\ndata: {test: [a, b]}\n",
    )
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nsolver: {steps: [5]}\n")
    recipe = load_recipe(child)
    assert recipe.solver.base_lr == 0.1 and recipe.solver.max_iter == 30
    assert recipe.solver.steps == [5]
    assert recipe.data.test == ["a", "b"]
    assert recipe.name == "child"


def test_several_bases_apply_in_order_and_delete_replaces(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "model: {backbone: {type: timm_resnet, name: resnet18}}\n")
    write(tmp_path / "b.yaml", "model: {backbone: {_delete_: true, type: swin, size: B}}\n")
    recipe = load_recipe(write(tmp_path / "c.yaml", "_base_: [a.yaml, b.yaml]\n"))
    assert recipe.model.backbone.type == "swin" and recipe.model.backbone.size == "B"
    # without _delete_ the keys of the timm backbone would leak into the swin one
    write(tmp_path / "b.yaml", "model: {backbone: {type: swin, size: B}}\n")
    with pytest.raises(ConfigError, match="unknown key 'model.backbone.swin.name'"):
        load_recipe(tmp_path / "c.yaml")


def test_base_can_name_a_shipped_recipe(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mine.yaml",
        "_base_: DECOLA_PHASE1_Lbase_CLIP_R5021k_4x\nsolver: {max_iter: 1000, steps: [800]}\n",
    )
    recipe = load_recipe(path)
    assert recipe.model.architecture == "decola" and recipe.solver.max_iter == 1000


def test_inheritance_cycle_and_missing_base_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match="_base_ file not found: nope.yaml"):
        load_recipe(tmp_path / "c.yaml")


def test_overrides_are_typed_by_the_schema() -> None:
    recipe = load_recipe(
        "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x",
        [
            "model.decola.per_prompt_topk=100",
            "solver.base_lr=1e-4",
            "solver.steps=[100, 200]",
            "solver.max_iter=300",
            "test.oracle=false",
            "data.train.0.name=lvis_v1_train",
            "logging.wandb.project=my project",
        ],
    )
    assert recipe.model.decola.per_prompt_topk == 100
    assert recipe.solver.base_lr == pytest.approx(1e-4)
    assert recipe.solver.steps == [100, 200] and recipe.solver.max_iter == 300
    assert recipe.test.oracle is False
    assert recipe.data.train[0].name == "lvis_v1_train"
    assert recipe.logging.wandb.project == "my project"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.decola.per_prompt_topkk=3",
            "unknown key 'model.decola.per_prompt_topkk' (did you mean 'per_prompt_topk'",
        ),
        (
            "model.decola.per_prompt_topk=abc",
            "model.decola.per_prompt_topk: Input should be a valid integer",
        ),
        (
            "model.decola.per_prompt_topk=0",
            "model.decola.per_prompt_topk: Input should be greater than 0",
        ),
        ("solver.steps=[400000]", "steps [400000] must all be below max_iter 360000"),
        ("data.train.5.ratio=2", "index 5 out of range"),
        ("data.train.x.ratio=2", "'data.train' is a list"),
        ("novalue", "must look like key.path=value"),
        ("model.backbone.type=swin", "unknown key 'model.backbone.swin.name'"),
    ],
)
def test_bad_overrides_are_one_line_errors_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_recipe("DECOLA_PHASE1_Lbase_CLIP_R5021k_4x", [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_apply_overrides_does_not_modify_its_input() -> None:
    data = {"solver": {"max_iter": 5}, "data": {"train": [{"name": "x"}]}}
    result = apply_overrides(data, ["solver.max_iter=7", "data.train.0.name=y"])
    assert data == {"solver": {"max_iter": 5}, "data": {"train": [{"name": "x"}]}}
    assert result["solver"]["max_iter"] == 7 and result["data"]["train"][0]["name"] == "y"


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "solver:\n  max_iter: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+"):
        load_recipe(bad)
    listing = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_recipe(listing)
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")


def test_unknown_and_unsupported_recipe_names() -> None:
    with pytest.raises(ConfigError, match="did you mean 'DECOLA_PHASE1_Lbase_CLIP_R5021k_4x'"):
        find_recipe("DECOLA_PHASE1_Lbase_CLIP_R5021K_4x")
    with pytest.raises(ConfigError, match="DECOLA_DETA"):
        find_recipe("DECOLA_PHASE1_O365_L_CLIP_SwinL_4x")


def test_dumped_recipe_loads_back_identically(tmp_path: Path) -> None:
    original = load_recipe("DECOLA_PHASE2_LbaseI_CLIP_SwinB_4x_ft4x", ["solver.base_lr=1e-4"])
    path = write(tmp_path / "dumped.yaml", dump_recipe(original))
    again = load_recipe(path)
    assert again.model_dump() == original.model_dump()


def test_output_dir_uses_the_recipe_name() -> None:
    recipe = load_recipe("toy/DECOLA_PHASE1_Toy")
    assert recipe.resolved_output_dir() == "output/toy/DECOLA_PHASE1_Toy"
