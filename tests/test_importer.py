"""`decola config import`: original detectron2-style YAMLs become the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from decola_core.config import load_recipe
from decola_core.config.importer import import_original
from decola_core.errors import ConfigError

# The original files, written from the values in spec/model.md §5.4 (A)-(D).
ORIGINAL_FILES = {
    "Base-DeformDETR_L_R50_4x.yaml": """
MODEL:
  META_ARCHITECTURE: "DeformableDetr"
  WEIGHTS: "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
  MASK_ON: False
  RESNETS:
    DEPTH: 50
    STRIDE_IN_1X1: False
    OUT_FEATURES: ["res3", "res4", "res5"]
  DETR:
    CLS_WEIGHT: 2.0
    GIOU_WEIGHT: 2.0
    L1_WEIGHT: 5.0
    NUM_OBJECT_QUERIES: 300
    DIM_FEEDFORWARD: 1024
    WITH_BOX_REFINE: True
    TWO_STAGE: True
    NUM_CLASSES: 1203
    USE_FED_LOSS: True
DATASETS:
  TRAIN: ("lvis_v1_train",)
  TEST: ("lvis_v1_val",)
SOLVER:
  CHECKPOINT_PERIOD: 30000
  USE_CUSTOM_SOLVER: True
  IMS_PER_BATCH: 32
  BASE_LR: 0.0002
  STEPS: (150000,)
  MAX_ITER: 180000
  WARMUP_FACTOR: 1.0
  WARMUP_ITERS: 1000
  WEIGHT_DECAY: 0.0001
  OPTIMIZER: "ADAMW"
  BACKBONE_MULTIPLIER: 0.1
  CLIP_GRADIENTS:
    ENABLED: True
    CLIP_TYPE: "full_model"
    CLIP_VALUE: 0.01
    NORM_TYPE: 2.0
  CUSTOM_MULTIPLIER: 0.1
  CUSTOM_MULTIPLIER_NAME: ['reference_points', 'sampling_offsets']
INPUT:
  FORMAT: "RGB"
  MIN_SIZE_TRAIN: (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
  CROP:
    ENABLED: True
    TYPE: "absolute_range"
    SIZE: (384, 600)
  CUSTOM_AUG: "DETR"
TEST:
  DETECTIONS_PER_IMAGE: 300
  DETECTIONS_PER_CLASS_IMAGE: -1
DATALOADER:
  FILTER_EMPTY_ANNOTATIONS: False
  NUM_WORKERS: 8
  SAMPLER_TRAIN: "RepeatFactorTrainingSampler"
  REPEAT_THRESHOLD: 0.001
OUTPUT_DIR: "output/Detic/auto"
FP16: True
VERSION: 2
""",
    "BoxSup-DeformDETR_Lbase_CLIP_R5021k_4x.yaml": """
_BASE_: "Base-DeformDETR_L_R50_4x.yaml"
MODEL:
  WEIGHTS: "weights/resnet50_miil_21k.pkl"
  BACKBONE:
    NAME: build_timm_backbone
  TIMM:
    BASE_NAME: resnet50_in21k
  DETR:
    NUM_CLASSES: 1203
    USE_BIAS: -4.59511985013459
    USE_ZEROSHOT_CLS: True
    NORM_WEIGHT: True
    IN_FEATURES: ['layer3', 'layer4', 'layer5']
    LOOK_FORWARD_TWICE: True
    DROPOUT: 0.0
SOLVER:
  IMS_PER_BATCH: 16
  STEPS: (300000,)
  MAX_ITER: 360000
DATASETS:
  TRAIN: ("lvis_v1_train_norare",)
FP16: True
""",
    "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x.yaml": """
_BASE_: "Base-DeformDETR_L_R50_4x.yaml"
MODEL:
  META_ARCHITECTURE: "DECOLA_DeformableDETR"
  WEIGHTS: "weights/resnet50_miil_21k.pkl"
  BACKBONE:
    NAME: build_timm_backbone
  TIMM:
    BASE_NAME: resnet50_in21k
  DECOLA:
    ORACLE_EVALUATION: True
    USE_PROMPT_EMBED_BIAS: True
    PER_PROMPT_TOPK: 300
    USE_PIXEL_FEATURE_AS_QUERY: True
    FIRST_STAGE_EMBED_NORM: True
    SECOND_STAGE_EMBED_NORM: True
    USE_PROMPT_EMBED_AS_QUERY: False
    PROB_A_OBJECT: 0.0
    TEST_CLASS_CONDITIONED: True
    FIRST_STAGE_ENC_LOSS_PER_PROMPT_TOPK: 10000
  DETR:
    DROPOUT: 0.0
    LOOK_FORWARD_TWICE: True
    NUM_CLASSES: 1203
    USE_BIAS: -4.59511985013459
    USE_ZEROSHOT_CLS: True
    NORM_WEIGHT: True
    IN_FEATURES: ['layer3', 'layer4', 'layer5']
DATASETS:
  TRAIN: ("lvis_v1_train_norare",)
  TEST: ("lvis_v1_val",)
INPUT:
  CUSTOM_AUG: DETR
SOLVER:
  IMS_PER_BATCH: 16
  STEPS: (300000,)
  MAX_ITER: 360000
FP16: True
FIND_UNUSED_PARAM: False
DATALOADER:
  NUM_WORKERS: 8
""",
    "DECOLA_PHASE2_LbaseI_CLIP_R5021k_4x_ft4x.yaml": """
_BASE_: "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x.yaml"
MODEL:
  WEIGHTS: "weights/DECOLA_PHASE1_Lbase_CLIP_R5021k_4x.pth"
  DECOLA:
    WEAK_LOSS_PSEUDO_TYPE: "max-score"
    USE_PSEUDO_LABELING_FOR_WEAK_LOSS: True
    PROB_A_OBJECT: 1.0
    TEST_CLASS_CONDITIONED: False
    ORACLE_EVALUATION: False
INPUT:
  CUSTOM_AUG: ResizeShortestEdge
  MIN_SIZE_TRAIN_SAMPLING: range
  MIN_SIZE_TRAIN: [480, 800]
DATASETS:
  TRAIN: ("lvis_v1_train_norare", "imagenet_lvis_v1")
DATALOADER:
  SAMPLER_TRAIN: "MultiDatasetSampler"
  DATASET_RATIO: [1, 4]
  USE_DIFF_BS_SIZE: True
  DATASET_BS: [2, 8]
  USE_RFS: [True, False]
  DATASET_MIN_SIZES: [[480, 800], [240, 400]]
  DATASET_MAX_SIZES: [1333, 667]
  FILTER_EMPTY_ANNOTATIONS: False
  MULTI_DATASET_GROUPING: True
  DATASET_ANN: ['box', 'image']
WITH_IMAGE_LABELS: True
""",
    "DECOLA_SELF_LABELING_Lbase_CLIP_R5021k_4x.yaml": """
_BASE_: "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x.yaml"
MODEL:
  WEIGHTS: "weights/DECOLA_PHASE1_Lbase_CLIP_R5021k_4x.pth"
  DECOLA:
    ORACLE_EVALUATION: True
    TEST_CLASS_CONDITIONED: True
    WEAK_LOSS_PSEUDO_TYPE: "max-score"
GEN_PSEDO_LABELS: True
WITH_IMAGE_LABELS: True
TEST:
  BATCH_SIZE: 1
  JUST_STORE_PREDICTIONS: True
  PREDICTION_SAVE_FILENAME: "phase1_r50_21k_ddetr_4x"
DATASETS:
  TRAIN: ("imagenet_lvis_v1",)
  TEST: ("imagenet_lvis_v1",)
INPUT:
  CUSTOM_AUG: ResizeShortestEdge
  MIN_SIZE_TRAIN_SAMPLING: range
  MIN_SIZE_TRAIN: [480, 800]
  MIN_SIZE_TEST: 400
  MAX_SIZE_TEST: 667
DATALOADER:
  SAMPLER_TRAIN: "MultiDatasetSampler"
  DATASET_ANN: ['image']
  DATASET_BS: [1]
  DATASET_RATIO: [1]
  USE_RFS: [False]
  DATASET_INPUT_SIZE: [384]
  DATASET_MIN_SIZES: [[240, 400]]
  DATASET_MAX_SIZES: [667]
  DATASET_INPUT_SCALE: [[320, 400]]
  FILTER_EMPTY_ANNOTATIONS: False
  MULTI_DATASET_GROUPING: True
""",
}


@pytest.fixture()
def originals(tmp_path: Path) -> Path:
    for name, text in ORIGINAL_FILES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _comparable(recipe) -> dict:
    data = recipe.model_dump()
    data.pop("description")
    return data


@pytest.mark.parametrize(
    "name",
    [
        "BoxSup-DeformDETR_Lbase_CLIP_R5021k_4x",
        "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x",
        "DECOLA_PHASE2_LbaseI_CLIP_R5021k_4x_ft4x",
        "DECOLA_SELF_LABELING_Lbase_CLIP_R5021k_4x",
    ],
)
def test_import_gives_the_shipped_recipe(originals: Path, name: str) -> None:
    result = import_original(originals / f"{name}.yaml")
    assert result.unknown == []
    assert _comparable(result.recipe) == _comparable(load_recipe(name))


def test_import_base_gives_the_shipped_base(originals: Path) -> None:
    result = import_original(originals / "Base-DeformDETR_L_R50_4x.yaml")
    assert _comparable(result.recipe) == _comparable(load_recipe("Base-DeformDETR_L_R50_4x"))
    assert ("VERSION", "not read by the deformable_detr family") in result.ignored


def test_import_detects_a_changed_value(originals: Path) -> None:
    path = originals / "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x.yaml"
    path.write_text(path.read_text().replace("PER_PROMPT_TOPK: 300", "PER_PROMPT_TOPK: 100"))
    imported = import_original(path).recipe
    assert imported.model.decola.per_prompt_topk == 100
    assert _comparable(imported) != _comparable(load_recipe("DECOLA_PHASE1_Lbase_CLIP_R5021k_4x"))


def test_unknown_and_architecture_specific_keys_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "MODEL": {
                    "META_ARCHITECTURE": "DeformableDetr",
                    "DECOLA": {"PER_PROMPT_TOPK": 5},
                    "DETR": {"NOT_A_KEY": 1},
                },
                "SOLVER": {"WARMUP_ITERZ": 3},
            }
        )
    )
    result = import_original(path)
    assert sorted(result.unknown) == ["MODEL.DETR.NOT_A_KEY", "SOLVER.WARMUP_ITERZ"]
    assert any(k == "MODEL.DECOLA.PER_PROMPT_TOPK" for k, _ in result.ignored)
    assert result.recipe.model.decola.per_prompt_topk == 300  # not applied to the baseline


def test_unsupported_architecture_and_masks_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "c2.yaml"
    path.write_text("MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n")
    with pytest.raises(ConfigError, match="architecture 'GeneralizedRCNN' is not supported"):
        import_original(path)
    path.write_text(
        "MODEL:\n  META_ARCHITECTURE: CustomRCNN\n  CENTERNET: {ONLY_PROPOSAL: false}\n"
    )
    with pytest.raises(ConfigError, match="MODEL.CENTERNET.ONLY_PROPOSAL.*implements only True"):
        import_original(path)
    path.write_text("MODEL:\n  META_ARCHITECTURE: DeformableDetr\n  MASK_ON: true\n")
    with pytest.raises(ConfigError, match="MASK_ON"):
        import_original(path)
    with pytest.raises(ConfigError, match="not found"):
        import_original(tmp_path / "missing.yaml")


def test_missing_base_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "child.yaml"
    path.write_text('_BASE_: "Base-missing.yaml"\n')
    with pytest.raises(ConfigError, match="Base-missing.yaml"):
        import_original(path)


@pytest.mark.reference
def test_import_full_dump_of_the_reference_small_model(reference_dir: Path) -> None:
    """A complete cfg.dump() of the original (every default written out) imports cleanly."""
    result = import_original(reference_dir / "golden_phase1_small.yaml")
    raw = yaml.safe_load((reference_dir / "golden_phase1_small.yaml").read_text())
    recipe = result.recipe
    assert result.unknown == []
    assert recipe.model.architecture == "decola"
    assert recipe.model.backbone.type == "timm_resnet"
    assert recipe.model.backbone.name == raw["MODEL"]["TIMM"]["BASE_NAME"]
    assert recipe.model.backbone.out_levels == raw["MODEL"]["TIMM"]["OUT_LEVELS"]
    detr, decola = raw["MODEL"]["DETR"], raw["MODEL"]["DECOLA"]
    assert recipe.model.transformer.enc_layers == detr["ENC_LAYERS"]
    assert recipe.model.transformer.dec_layers == detr["DEC_LAYERS"]
    assert recipe.model.transformer.dim_feedforward == detr["DIM_FEEDFORWARD"]
    assert recipe.model.transformer.num_queries == detr["NUM_OBJECT_QUERIES"]
    assert recipe.model.decola.per_prompt_topk == decola["PER_PROMPT_TOPK"]
    assert (
        recipe.model.decola.enc_loss_per_prompt_topk
        == decola["FIRST_STAGE_ENC_LOSS_PER_PROMPT_TOPK"]
    )
    assert recipe.test.oracle == decola["ORACLE_EVALUATION"]
    assert recipe.solver.amp == ("backbone-fp16" if raw["FP16"] else "off")
