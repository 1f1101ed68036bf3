"""Dataset names resolve under the data root; recipes declare new sets by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from decola_core.config import load_recipe
from decola_core.data.catalog import DatasetCatalog
from decola_core.errors import DatasetError


def test_builtin_names_resolve_under_the_data_root(tmp_path: Path) -> None:
    catalog = DatasetCatalog(tmp_path)
    lvis = catalog.get("lvis_v1_train_norare")
    assert lvis.annotations == tmp_path / "lvis" / "lvis_v1_train_norare.json"
    assert lvis.image_root == tmp_path / "coco"
    imagenet = catalog.get("imagenet_lvis_v1")
    assert imagenet.spec.ann_type == "image"
    pseudo = catalog.get("imagenet_lvis_v1_decola_phase1_swinb_zeroshot_4x")
    assert pseudo.annotations.name == "imagenet_lvis_v1_decola_phase1_swinb_zeroshot_4x.json"
    assert set(lvis.missing()) == {lvis.annotations, lvis.image_root}


def test_recipe_declared_dataset_needs_no_code(tmp_path: Path) -> None:
    recipe_file = tmp_path / "mine.yaml"
    recipe_file.write_text(
        "_base_: DECOLA_PHASE1_Lbase_CLIP_R5021k_4x\n"
        "data:\n"
        "  datasets:\n"
        "    my_set: {image_root: /data/imgs, annotations: my/ann.json, ann_type: box}\n"
        "  train:\n    - {name: my_set}\n"
    )
    recipe = load_recipe(recipe_file)
    catalog = DatasetCatalog(tmp_path, recipe.data.datasets)
    resolved = catalog.get(recipe.data.train[0].name)
    assert resolved.image_root == Path("/data/imgs")  # absolute paths stay absolute
    assert resolved.annotations == tmp_path / "my" / "ann.json"


def test_unknown_dataset_suggests_close_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="did you mean 'lvis_v1_val'"):
        DatasetCatalog(tmp_path).get("lvis_v1_vall")
