"""Every shipped recipe loads, and the key recipes carry the original release's values."""

from __future__ import annotations

import pytest

from decola_core.config import list_recipes, load_recipe
from decola_core.config.schema import PRIOR_BIAS
from decola_core.data.catalog import DatasetCatalog

#: Every Deformable-DETR config of the original release (spec/model.md §5.4, pipeline.md §8).
ORIGINAL_RECIPES = [
    "Base-DeformDETR_L_R50_4x",
    "BoxSup-DeformDETR_L_CLIP_R5021k_4x",
    "BoxSup-DeformDETR_Lbase_CLIP_R5021k_4x",
    "BoxSup-DeformDETR_Lbase_CLIP_R501k_4x",
    "BoxSup-DeformDETR_L_CLIP_SwinB_4x",
    "BoxSup-DeformDETR_Lbase_CLIP_SwinB_4x",
    "BoxSup-DeformDETR_Lbase_CLIP_SwinL_4x",
    "BoxSup+ST-DeformDETR_LI_CLIP_R5021k_4x_ft4x",
    "BoxSup+ST-DeformDETR_LbaseI_CLIP_R5021k_4x_ft4x",
    "BoxSup+ST-DeformDETR_LI_CLIP_SwinB_4x_ft4x",
    "BoxSup+ST-DeformDETR_LbaseI_CLIP_SwinB_4x_ft4x",
    "BoxSup+ST-DeformDETR_LbaseI_CLIP_SwinL_4x_ft4x",
    "BoxSup_SELF_LABELING_Lbase_CLIP_R5021k_4x",
    "DECOLA_PHASE1_L_CLIP_R5021k_4x",
    "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x",
    "DECOLA_PHASE1_L_CLIP_SwinB_4x",
    "DECOLA_PHASE1_Lbase_CLIP_SwinB_4x",
    "DECOLA_PHASE1_O365_CLIP_SwinT",
    "DECOLA_PHASE1_O365_CLIP_SwinL",
    "DECOLA_PHASE2_LI_CLIP_R5021k_4x_ft4x",
    "DECOLA_PHASE2_LbaseI_CLIP_R5021k_4x_ft4x",
    "DECOLA_PHASE2_LI_CLIP_SwinB_4x_ft4x",
    "DECOLA_PHASE2_LbaseI_CLIP_SwinB_4x_ft4x",
    "DECOLA_PHASE2_LI_CLIP_R5021k_4x_OFFLINE_ft4x",
    "DECOLA_PHASE2_LbaseI_CLIP_R5021k_4x_OFFLINE_ft4x",
    "DECOLA_PHASE2_LI_CLIP_SwinB_4x_OFFLINE_ft4x",
    "DECOLA_PHASE2_LbaseI_CLIP_SwinB_4x_OFFLINE_ft4x",
    "DECOLA_PHASE2_O365IN21k_CLIP_SwinT",
    "DECOLA_PHASE2_O365_OIIN21k_CLIP_SwinL",
    "DECOLA_SELF_LABELING_Lbase_CLIP_R5021k_4x",
    "DECOLA_SELF_LABELING_Lbase_CLIP_SwinB_4x",
    "Detic_LI_CLIP_SwinB_896b32_4x_ft4x_max-size",
    "eval/DECOLA_PHASE2_O365IN21k_CLIP_SwinT",
    "eval/DECOLA_PHASE2_O365_OIIN21k_CLIP_SwinL",
]
#: Training sets the original configs name but never registered (spec pipeline.md §1.2).
UNREGISTERED = {
    "objects365_v1_train",
    "imagenet_21k_objects365_v1_train",
    "imagenet_21k_objects365_v2_train",
    "imagenet_21k_oid_v7_train",
    "imagenet_lvis-21k",
}


def test_every_original_recipe_is_shipped_under_its_name() -> None:
    missing = sorted(set(ORIGINAL_RECIPES) - set(list_recipes()))
    assert not missing


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_loads_and_names_known_datasets(name: str, tmp_path) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.description, "every shipped recipe says what it is"
    catalog = DatasetCatalog(tmp_path)
    used = {d.name for d in recipe.data.train} | set(recipe.data.test)
    unknown = {n for n in used if n not in catalog} - UNREGISTERED
    assert not unknown


def test_phase1_lbase_r50_matches_the_original() -> None:
    r = load_recipe("DECOLA_PHASE1_Lbase_CLIP_R5021k_4x")
    assert r.model.architecture == "decola"
    assert r.model.weights == "zoo:resnet50-miil-21k"
    assert r.model.backbone.type == "timm_resnet" and r.model.backbone.name == "resnet50"
    assert r.model.backbone.out_levels == [3, 4, 5] and r.model.backbone.freeze_at == 0
    assert r.model.transformer.in_features == ["layer3", "layer4", "layer5"]
    assert (r.model.transformer.dropout, r.model.transformer.dim_feedforward) == (0.0, 1024)
    assert r.model.transformer.look_forward_twice and r.model.transformer.num_queries == 300
    d = r.model.decola
    assert d.per_prompt_topk == 300 and d.enc_loss_per_prompt_topk == 10000
    assert d.use_prompt_embed_bias and d.use_pixel_feature_as_query
    assert not d.use_prompt_embed_as_query and d.prob_a_object == 0.0
    assert d.decoder_self_attention == "grouped"
    assert r.model.classifier.num_classes == 1203
    assert r.model.classifier.embeddings == "metadata/lvis_v1_clip_a+cname.npy"
    assert r.test.oracle and r.test.conditioned and r.test.detections_per_image == 300
    s = r.solver
    assert (s.optimizer, s.base_lr, s.weight_decay) == ("adamw", 2e-4, 1e-4)
    assert (s.backbone_multiplier, s.custom_multiplier) == (0.1, 0.1)
    assert s.custom_multiplier_names == ["reference_points", "sampling_offsets"]
    assert (s.ims_per_batch, s.max_iter, s.steps) == (16, 360000, [300000])
    assert (s.warmup_factor, s.checkpoint_period, s.amp) == (1.0, 30000, "backbone-fp16")
    assert s.clip_gradients.enabled and s.clip_gradients.type == "full_model"
    assert s.clip_gradients.value == 0.01
    assert [t.name for t in r.data.train] == ["lvis_v1_train_norare"]
    assert (r.data.sampler, r.data.repeat_threshold) == ("repeat_factor", 0.001)
    assert r.data.augmentation == "detr" and r.data.crop.size == [384, 600]
    assert r.data.min_size_train == list(range(480, 801, 32))
    assert not r.data.filter_empty_annotations and r.data.test == ["lvis_v1_val"]


def test_phase2_lbasei_r50_matches_the_original() -> None:
    r = load_recipe("DECOLA_PHASE2_LbaseI_CLIP_R5021k_4x_ft4x")
    assert r.model.weights == "zoo:decola-phase1-lbase-r50"
    d = r.model.decola
    assert d.prob_a_object == 1.0 and d.use_pseudo_labeling_for_weak_loss
    assert d.pseudo_box_choice == "max-score" and d.per_prompt_topk == 300
    assert not r.test.oracle and not r.test.conditioned
    assert r.model.with_image_labels
    assert r.data.sampler == "multi_dataset" and r.data.multi_dataset_grouping
    assert r.data.augmentation == "resize_shortest_edge"
    assert r.data.min_size_train_sampling == "range"
    train = r.data.train
    assert [t.name for t in train] == ["lvis_v1_train_norare", "imagenet_lvis_v1"]
    assert [t.ratio for t in train] == [1, 4]
    assert [t.batch_size for t in train] == [2, 8]
    assert [t.ann_type for t in train] == ["box", "image"]
    assert [t.use_rfs for t in train] == [True, False]
    assert [t.min_size for t in train] == [[480, 800], [240, 400]]
    assert [t.max_size for t in train] == [1333, 667]
    assert (r.solver.max_iter, r.solver.base_lr, r.solver.clip_gradients.value) == (
        360000,
        2e-4,
        0.01,
    )


def test_offline_phase2_trains_on_the_matching_pseudo_labels() -> None:
    expected = {
        "DECOLA_PHASE2_LbaseI_CLIP_R5021k_4x_OFFLINE_ft4x": "r50_21k_zeroshot",
        "DECOLA_PHASE2_LI_CLIP_R5021k_4x_OFFLINE_ft4x": "r50_21k_standard",
        "DECOLA_PHASE2_LbaseI_CLIP_SwinB_4x_OFFLINE_ft4x": "swinb_zeroshot",
        "DECOLA_PHASE2_LI_CLIP_SwinB_4x_OFFLINE_ft4x": "swinb_standard",
    }
    for name, labeler in expected.items():
        pseudo = load_recipe(name).data.train[1]
        assert pseudo.name == f"imagenet_lvis_v1_decola_phase1_{labeler}_4x"
        assert pseudo.ann_type == "box" and pseudo.ratio == 4


def test_self_labeling_matches_the_original() -> None:
    r = load_recipe("DECOLA_SELF_LABELING_Lbase_CLIP_R5021k_4x")
    assert r.self_label.enabled and r.self_label.prediction_name == "phase1_r50_21k_ddetr_4x"
    assert r.model.weights == "zoo:decola-phase1-lbase-r50"
    assert (r.test.min_size, r.test.max_size, r.test.batch_size) == (400, 667, 1)
    assert r.test.oracle and r.test.conditioned
    assert r.model.decola.pseudo_box_choice == "max-score"
    assert r.data.test == ["imagenet_lvis_v1"]
    assert [(t.name, t.ann_type) for t in r.data.train] == [("imagenet_lvis_v1", "image")]


def test_boxsup_r50_21k_matches_the_original() -> None:
    r = load_recipe("BoxSup-DeformDETR_Lbase_CLIP_R5021k_4x")
    assert r.model.architecture == "deformable_detr"
    assert r.model.weights == "zoo:resnet50-miil-21k"
    assert r.model.transformer.dropout == 0.0 and r.model.transformer.look_forward_twice
    c = r.model.classifier
    assert c.use_zeroshot and c.norm_weight and c.norm_temperature == 50.0
    assert c.bias_init == pytest.approx(PRIOR_BIAS) and c.num_classes == 1203
    assert (r.model.loss.class_weight, r.model.loss.bbox_l1_weight, r.model.loss.giou_weight) == (
        2.0,
        5.0,
        2.0,
    )
    assert r.model.loss.use_fed_loss and r.model.loss.weak_weight == 0.1
    assert (r.solver.max_iter, r.solver.ims_per_batch) == (360000, 16)
    assert [t.name for t in r.data.train] == ["lvis_v1_train_norare"]


def test_backbone_variants() -> None:
    r501k = load_recipe("BoxSup-DeformDETR_Lbase_CLIP_R501k_4x")
    assert r501k.model.backbone.type == "d2_resnet" and r501k.model.backbone.freeze_at == 2
    assert not r501k.model.backbone.stride_in_1x1
    assert r501k.model.transformer.dropout == 0.1
    assert not r501k.model.transformer.look_forward_twice
    swinl = load_recipe("BoxSup-DeformDETR_Lbase_CLIP_SwinL_4x")
    assert swinl.model.backbone.type == "swin" and swinl.model.backbone.size == "L-22k-384"
    t = swinl.model.transformer
    assert (t.num_feature_levels, t.num_queries, t.dim_feedforward) == (5, 900, 2048)
    assert swinl.solver.checkpoint_period == 90000
    swinb = load_recipe("DECOLA_PHASE1_L_CLIP_SwinB_4x")
    assert swinb.model.backbone.size == "B-22k" and swinb.model.weights == "zoo:swin-b-22k"
    assert swinb.model.transformer.in_features == ["swin1", "swin2", "swin3"]
    assert [t.name for t in swinb.data.train] == ["lvis_v1_train"]


def test_misnamed_detic_recipe_is_swin_l_on_lvis_base() -> None:
    r = load_recipe("Detic_LI_CLIP_SwinB_896b32_4x_ft4x_max-size")
    assert r.model.backbone.size == "L-22k-384"
    assert [t.name for t in r.data.train] == ["lvis_v1_train_norare", "imagenet_lvis_v1"]


def test_zero_shot_eval_recipes_use_the_lvis_vocabulary_in_object_mode() -> None:
    for name in (
        "eval/DECOLA_PHASE2_O365IN21k_CLIP_SwinT",
        "eval/DECOLA_PHASE2_O365_OIIN21k_CLIP_SwinL",
    ):
        r = load_recipe(name)
        assert r.model.classifier.num_classes == 1203
        assert r.model.decola.prob_a_object == 1.0 and not r.test.conditioned
        assert r.test.detections_per_image == 9999
        assert r.data.test == ["lvis_v1_val", "lvis_v1_minival"]
    assert (
        load_recipe("eval/DECOLA_PHASE2_O365_OIIN21k_CLIP_SwinL").model.backbone.size == "L-22k-384"
    )


def test_readme_lists_every_recipe() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in list_recipes() if f"`{name}`" not in readme]
    assert not missing


def test_every_yaml_file_in_configs_validates() -> None:
    """Fragments (configs/_fragments) are partial recipes; they validate on their own too."""
    from decola_core.config import config_dir

    files = sorted(config_dir().rglob("*.yaml"))
    assert len(files) > len(list_recipes())  # fragments are included here
    for path in files:
        load_recipe(path)
