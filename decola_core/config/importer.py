"""Convert an original DECOLA (detectron2-style) YAML config into a recipe of this schema.

The original files use uppercase keys and ``_BASE_`` inheritance on top of the defaults of
detectron2, Detic and DECOLA. The schema's defaults equal those defaults, so only the keys a
file sets need translating. Some original keys are read only by one architecture or backbone
(``MODEL.DECOLA.*`` by DECOLA, ``MODEL.DETR.ZEROSHOT_*`` by the baseline, ``MODEL.TIMM.*`` by the
timm backbone); they are translated only for that model and otherwise reported as ignored.
Keys that no DETR-family model reads (CenterNet2, RPN/ROI heads, debug switches, ...) are
ignored; keys this importer has never heard of are reported as unknown.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decola_core.config.loader import deep_merge, read_yaml, validate_recipe
from decola_core.config.schema import Recipe
from decola_core.errors import ConfigError

ORIGINAL_BASE_KEY = "_BASE_"

ARCHITECTURES = {
    "DECOLA_DeformableDETR": "decola",
    "DeformableDetr": "deformable_detr",
    "CustomRCNN": "centernet2",
}
BACKBONES = {
    "build_timm_backbone": "timm_resnet",
    "build_swintransformer_backbone": "swin",
    "build_p67_timm_fpn_backbone": "timm_resnet",  # CenterNet2: + FPN with P6/P7 from P5
    "build_swintransformer_fpn_backbone": "swin",
    "build_resnet_backbone": "d2_resnet",
}
AUGMENTATIONS = {
    "": "default",
    "DETR": "detr",
    "ResizeShortestEdge": "resize_shortest_edge",
    "EfficientDetResizeCrop": "efficientdet_resize_crop",
    "LSJ": "lsj",
}
SAMPLERS = {
    "TrainingSampler": "training",
    "RepeatFactorTrainingSampler": "repeat_factor",
    "MultiDatasetSampler": "multi_dataset",
}
SCHEDULERS = {"WarmupMultiStepLR": "multistep", "WarmupCosineLR": "cosine"}
#: timm names of the original that current timm spells differently (same architecture).
TIMM_NAMES = {"resnet50_in21k": "resnet50"}

#: Original weight files -> zoo names, so imported recipes fetch the same weights.
WEIGHT_FILES = {
    "weights/resnet50_miil_21k.pkl": "zoo:resnet50-miil-21k",
    "weights/swin_base_patch4_window7_224_22k.pkl": "zoo:swin-b-22k",
    "weights/swin_large_patch4_window12_384_22k.pkl": "zoo:swin-l-22k-384",
    "weights/swin_tiny_patch4_window7_224.pkl": "zoo:swin-t-1k",
    "weights/deta/adet_swin_pt_o365.pkl": "zoo:deta-swin-l-o365",
    "detectron2://ImageNetPretrained/torchvision/R-50.pkl": "zoo:torchvision-r50-1k",
    "weights/DECOLA_PHASE1_Lbase_CLIP_R5021k_4x.pth": "zoo:decola-phase1-lbase-r50",
    "weights/DECOLA_PHASE1_L_CLIP_R5021k_4x.pth": "zoo:decola-phase1-l-r50",
    "weights/DECOLA_PHASE1_Lbase_CLIP_SwinB_4x.pth": "zoo:decola-phase1-lbase-swinb",
    "weights/DECOLA_PHASE1_L_CLIP_SwinB_4x.pth": "zoo:decola-phase1-l-swinb",
    "weights/BoxSup-DeformDETR_Lbase_CLIP_R5021k_4x.pth": "zoo:boxsup-lbase-r50",
    "weights/BoxSup-DeformDETR_L_CLIP_R5021k_4x.pth": "zoo:boxsup-l-r50",
    "weights/BoxSup-DeformDETR_Lbase_CLIP_SwinB_4x.pth": "zoo:boxsup-lbase-swinb",
    "weights/BoxSup-DeformDETR_L_CLIP_SwinB_4x.pth": "zoo:boxsup-l-swinb",
    "weights/BoxSup-DeformDETR_Lbase_CLIP_SwinL_4x.pth": "zoo:boxsup-lbase-swinl",
}

#: Keys of options decola does not have, each with the reason it can be ignored.
SETTLED_KEYS = {
    "MODEL.DETR.TWO_STAGE": "always two-stage (as every released model)",
    "MODEL.DETR.WITH_BOX_REFINE": "always iterative box refinement (as every released model)",
    "MODEL.DETR.DEEP_SUPERVISION": "every decoder layer is always supervised (as released)",
    "MODEL.DETR.MIXED_SELECTION": "not used by any released model; not supported",
    "MODEL.DETR.USE_ADAPTIVE_NUM_QUERY_FOR_EVALUATION": "box-efficiency analysis; not supported",
    "MODEL.DETR.PER_CLASS_NUM_QUERY": "box-efficiency analysis; not supported",
    "TEST.EVAL_PERIOD": "no evaluation during training: run decola eval or train --eval-only",
}

#: CenterNet2 options decola implements for one value only (the released models' value).
C2_FIXED_VALUES = {
    "MODEL.PROPOSAL_GENERATOR.NAME": "CenterNet",
    "MODEL.ROI_HEADS.NAME": "DeticCascadeROIHeads",
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.6],
    "MODEL.ROI_HEADS.IOU_LABELS": [0, 1],
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": True,
    "MODEL.CENTERNET.ONLY_PROPOSAL": True,
    "MODEL.CENTERNET.WITH_AGN_HM": True,
    "MODEL.CENTERNET.NORM": "GN",
    "MODEL.CENTERNET.NUM_SHARE_CONVS": 0,
    "MODEL.CENTERNET.LOC_LOSS_TYPE": "giou",
    "MODEL.CENTERNET.NOT_NORM_REG": True,
    "MODEL.CENTERNET.MORE_POS": False,
    "MODEL.CENTERNET.CENTER_NMS": False,
    "MODEL.CENTERNET.NOT_NMS": False,
    "MODEL.CENTERNET.AS_PROPOSAL": False,
    "MODEL.CENTERNET.USE_DEFORMABLE": False,
    "MODEL.CENTERNET.NO_REDUCE": False,
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 0,
    "MODEL.ROI_BOX_HEAD.NORM": "",
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0,
    "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": True,
    "MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS": True,
    "MODEL.ROI_BOX_HEAD.NORM_WEIGHT": True,
    "MODEL.ROI_BOX_HEAD.USE_BIAS": 0.0,
    "MODEL.ROI_BOX_HEAD.ADD_IMAGE_BOX": False,
    "MODEL.ROI_BOX_HEAD.IGNORE_ZERO_CATS": False,
    "MODEL.ROI_BOX_HEAD.SOFTMAX_WEAK_LOSS": False,
    "MODEL.ROI_BOX_HEAD.USE_EQL_LOSS": False,
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": False,
    "MODEL.ROI_BOX_HEAD.ADD_FEATURE_TO_PROP": False,
    "MODEL.ROI_BOX_HEAD.WITH_SOFTMAX_PROP": False,
    "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead",
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": True,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_MASK_HEAD.NORM": "",
    "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum",
    "MODEL.DYNAMIC_CLASSIFIER": False,
    "MODEL.WITH_CAPTION": False,
}

#: Subtrees and keys that no DETR-family model reads.
IGNORED_PREFIXES = (
    "MODEL.ANCHOR_GENERATOR",
    "MODEL.BIFPN",
    "MODEL.CENTERNET",
    "MODEL.DLA",
    "MODEL.FPN",
    "MODEL.PANOPTIC_FPN",
    "MODEL.PROPOSAL_GENERATOR",
    "MODEL.ROI_",
    "MODEL.RPN",
    "MODEL.RETINANET",
    "MODEL.SEM_SEG_HEAD",
    "MODEL.KEYPOINT_ON",
    "MODEL.LOAD_PROPOSALS",
    "MODEL.DEVICE",
    "MODEL.CAP_",
    "MODEL.SYNC_CAPTION_BATCH",
    "MODEL.DYNAMIC_CLASSIFIER",
    "MODEL.NUM_SAMPLE_CATS",
    "MODEL.RESET_CLS_TESTS",
    "MODEL.TEST_CLASSIFIERS",
    "MODEL.TEST_NUM_CLASSES",
    "MODEL.DATASET_LOSS_WEIGHT",
    "MODEL.WITH_CAPTION",
    "MODEL.SOFTMAX_CLS",
    "MODEL.MASK_ON",
    "MODEL.DETR.FROZEN_WEIGHTS",
    "MODEL.DETR.NO_OBJECT_WEIGHT",
    "MODEL.DETR.PRE_NORM",
    "MODEL.DETR.NUM_CLASSES_LIST",
    "MODEL.DETR.USE_FED_LOSS_LIST",
    "MODEL.DETR.IGNORE_ZERO_CATS",
    "MODEL.DETR.CAT_FREQ_PATH",
    "MODEL.DETR.IMAGE_LABEL_LOSS",
    "MODEL.DECOLA.WITH_IMAGE_LABELS",
    "MODEL.DECOLA.OFFLINE_PSEUDO_LABELER_PATH",
    "MODEL.DECOLA.ZS_WEIGHT_PATH_LIST",
    "MODEL.TIMM.PRETRAINED",
    "MODEL.RESNETS.DEFORM_",
    "MODEL.RESNETS.NUM_GROUPS",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "MODEL.RESNETS.RES5_DILATION",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK",
    "DATASETS.PROPOSAL_FILES",
    "DATALOADER.PSEUDO_LABEL_TRAINING_SCORE_THRES",
    "DATALOADER.REPEAT_SQRT",
    "DATALOADER.USE_DIFF_BS_SIZE",
    "DATALOADER.USE_TAR_DATASET",
    "DATALOADER.TARFILE_PATH",
    "DATALOADER.TAR_INDEX_DIR",
    "DATALOADER.DATASET_",
    "INPUT.TEST_SIZE",
    "INPUT.TEST_INPUT_TYPE",
    "INPUT.IMAGE_SIZE",
    "INPUT.MIN_SCALE",
    "INPUT.MAX_SCALE",
    "INPUT.MASK_FORMAT",
    "INPUT.NOT_CLAMP_BOX",
    "SOLVER.USE_CUSTOM_SOLVER",
    "SOLVER.NESTEROV",
    "SOLVER.WEIGHT_DECAY_NORM",
    "SOLVER.WEIGHT_DECAY_BIAS",
    "SOLVER.BIAS_LR_FACTOR",
    "SOLVER.REFERENCE_WORLD_SIZE",
    "SOLVER.BASE_LR_END",
    "SOLVER.RESET_ITER",
    "SOLVER.AMP",
    "SOLVER.NUM_DECAYS",
    "SOLVER.RESCALE_INTERVAL",
    "SAVE_DEBUG",
    "VIS_PERIOD",
    "TEST.AUG",
    "TEST.PRECISE_BN",
    "TEST.EXPECTED_RESULTS",
    "TEST.KEYPOINT_OKS_SIGMAS",
    "VERSION",
    "CUDNN_BENCHMARK",
    "DEBUG",
    "IS_DEBUG",
    "QUICK_DEBUG",
    "SAVE_DEBUG_PATH",
    "EVAL_PRED_AR",
    "EVAL_PROPOSAL_AR",
    "EVAL_CAT_SPEC_AR",
    "EVAL_AP_FIX",
    "SAVE_VIS",
    "SAVE_PTH",
    "FIND_UNUSED_PARAM",
    "GLOBAL",
    "FLOAT32_PRECISION",
    "DEBUG_SHOW_NAME",
    "VIS_THRESH",
    "DATASETS.TEST_SEQ",
)

Converter = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _lower(value: Any) -> Any:
    return str(value).lower()


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, list | tuple) else value


def _choice(table: Mapping[str, str], what: str) -> Converter:
    def convert(value: Any) -> Any:
        if value not in table:
            known = ", ".join(repr(k) for k in table)
            raise ConfigError(f"{what} {value!r} is not supported (supported: {known})")
        return table[value]

    return convert


def _data_path(value: Any) -> Any:
    """Original metadata paths are relative to the repo root; ours to the data root."""
    text = str(value)
    return text[len("datasets/") :] if text.startswith("datasets/") else text


def _weights(value: Any) -> Any:
    return WEIGHT_FILES.get(str(value), str(value))


def _output_dir(value: Any) -> Any:
    text = str(value).rstrip("/")
    if text == "output/Detic/auto":
        return "output/{name}"
    return text[: -len("auto")] + "{name}" if text.endswith("/auto") else text


#: (original key, recipe path, converter, which model or backbone reads it: None = all)
Rule = tuple[str, str, Converter, str | None]


def _table(
    reader: str | None, entries: dict[str, str | tuple[str, Converter]], prefix: str = ""
) -> list[Rule]:
    """Rules from ``{original key: recipe path}`` or ``{key: (recipe path, converter)}``;
    ``prefix`` is put in front of every original key."""
    rules = []
    for key, target in entries.items():
        path, convert = target if isinstance(target, tuple) else (target, _same)
        rules.append((prefix + key, path, convert, reader))
    return rules


RULES: list[Rule] = [
    *_table(
        None,
        {
            "MODEL.META_ARCHITECTURE": (
                "model.architecture",
                _choice(ARCHITECTURES, "architecture"),
            ),
            "MODEL.WEIGHTS": ("model.weights", _weights),
            "MODEL.PIXEL_MEAN": "model.pixel_mean",
            "MODEL.PIXEL_STD": "model.pixel_std",
            "WITH_IMAGE_LABELS": "model.with_image_labels",
            "MODEL.BACKBONE.NAME": ("model.backbone.type", _choice(BACKBONES, "backbone")),
            "MODEL.DETR.HIDDEN_DIM": "model.transformer.hidden_dim",
            "MODEL.DETR.NHEADS": "model.transformer.nheads",
            "MODEL.DETR.ENC_LAYERS": "model.transformer.enc_layers",
            "MODEL.DETR.DEC_LAYERS": "model.transformer.dec_layers",
            "MODEL.DETR.DIM_FEEDFORWARD": "model.transformer.dim_feedforward",
            "MODEL.DETR.DROPOUT": "model.transformer.dropout",
            "MODEL.DETR.NUM_FEATURE_LEVELS": "model.transformer.num_feature_levels",
            "MODEL.DETR.NUM_OBJECT_QUERIES": "model.transformer.num_queries",
            "MODEL.DETR.LOOK_FORWARD_TWICE": "model.transformer.look_forward_twice",
            "MODEL.DETR.IN_FEATURES": "model.transformer.in_features",
            "MODEL.DETR.NUM_CLASSES": "model.classifier.num_classes",
            "MODEL.DETR.CLS_WEIGHT": "model.loss.class_weight",
            "MODEL.DETR.L1_WEIGHT": "model.loss.bbox_l1_weight",
            "MODEL.DETR.GIOU_WEIGHT": "model.loss.giou_weight",
            "MODEL.DETR.FOCAL_ALPHA": "model.loss.focal_alpha",
            "MODEL.DETR.USE_FED_LOSS": "model.loss.use_fed_loss",
            "DATASETS.TEST": "data.test",
            "DATALOADER.SAMPLER_TRAIN": ("data.sampler", _choice(SAMPLERS, "sampler")),
            "DATALOADER.REPEAT_THRESHOLD": "data.repeat_threshold",
            "DATALOADER.MULTI_DATASET_GROUPING": "data.multi_dataset_grouping",
            "DATALOADER.ASPECT_RATIO_GROUPING": "data.aspect_ratio_grouping",
            "DATALOADER.FILTER_EMPTY_ANNOTATIONS": "data.filter_empty_annotations",
            "DATALOADER.NUM_WORKERS": "data.num_workers",
            "INPUT.CUSTOM_AUG": ("data.augmentation", _choice(AUGMENTATIONS, "INPUT.CUSTOM_AUG")),
            "INPUT.FORMAT": "data.format",
            "INPUT.MIN_SIZE_TRAIN": "data.min_size_train",
            "INPUT.MIN_SIZE_TRAIN_SAMPLING": "data.min_size_train_sampling",
            "INPUT.MAX_SIZE_TRAIN": "data.max_size_train",
            "INPUT.TRAIN_SIZE": "data.train_size",
            "INPUT.SCALE_RANGE": "data.scale_range",
            "INPUT.CROP.ENABLED": "data.crop.enabled",
            "INPUT.CROP.TYPE": "data.crop.type",
            "INPUT.CROP.SIZE": "data.crop.size",
            "INPUT.RANDOM_FLIP": "data.random_flip",
            "INPUT.MIN_SIZE_TEST": "test.min_size",
            "INPUT.MAX_SIZE_TEST": "test.max_size",
            "SOLVER.OPTIMIZER": ("solver.optimizer", _lower),
            "SOLVER.BASE_LR": "solver.base_lr",
            "SOLVER.WEIGHT_DECAY": "solver.weight_decay",
            "SOLVER.MOMENTUM": "solver.momentum",
            "SOLVER.BACKBONE_MULTIPLIER": "solver.backbone_multiplier",
            "SOLVER.CUSTOM_MULTIPLIER": "solver.custom_multiplier",
            "SOLVER.CUSTOM_MULTIPLIER_NAME": "solver.custom_multiplier_names",
            "SOLVER.IMS_PER_BATCH": "solver.ims_per_batch",
            "SOLVER.MAX_ITER": "solver.max_iter",
            "SOLVER.TRAIN_ITER": ("solver.train_iter", lambda v: max(int(v), 0)),
            "SOLVER.LR_SCHEDULER_NAME": (
                "solver.lr_scheduler",
                _choice(SCHEDULERS, "LR scheduler"),
            ),
            "SOLVER.STEPS": "solver.steps",
            "SOLVER.GAMMA": "solver.gamma",
            "SOLVER.WARMUP_METHOD": "solver.warmup_method",
            "SOLVER.WARMUP_FACTOR": "solver.warmup_factor",
            "SOLVER.WARMUP_ITERS": "solver.warmup_iters",
            "SOLVER.CLIP_GRADIENTS.ENABLED": "solver.clip_gradients.enabled",
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "solver.clip_gradients.type",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": "solver.clip_gradients.value",
            "SOLVER.CLIP_GRADIENTS.NORM_TYPE": "solver.clip_gradients.norm_type",
            "SOLVER.CHECKPOINT_PERIOD": "solver.checkpoint_period",
            "FP16": ("solver.amp", lambda v: "backbone-fp16" if v else "off"),
            "TEST.DETECTIONS_PER_IMAGE": "test.detections_per_image",
            "TEST.DETECTIONS_PER_CLASS_IMAGE": "test.detections_per_class_per_image",
            "TEST.BATCH_SIZE": "test.batch_size",
            "TEST.PREDICTION_SAVE_FILENAME": "self_label.prediction_name",
            "WANDB.PROJECT": "logging.wandb.project",
            "WANDB.GROUP": "logging.wandb.group",
            "WANDB.RUN_NAME": "logging.wandb.run_name",
            "WANDB.VIS_PERIOD": "logging.wandb.vis_period",
            "OUTPUT_DIR": ("output_dir", _output_dir),
            "SEED": "seed",
        },
    ),
    *_table(
        "timm_resnet",
        {
            "MODEL.TIMM.BASE_NAME": ("model.backbone.name", lambda v: TIMM_NAMES.get(v, v)),
            "MODEL.TIMM.OUT_LEVELS": "model.backbone.out_levels",
            "MODEL.TIMM.NORM": "model.backbone.norm",
            "MODEL.TIMM.FREEZE_AT": "model.backbone.freeze_at",
        },
    ),
    *_table(
        "swin",
        {
            "MODEL.SWIN.SIZE": "model.backbone.size",
            "MODEL.SWIN.OUT_FEATURES": "model.backbone.out_indices",
            "MODEL.SWIN.USE_CHECKPOINT": "model.backbone.use_checkpoint",
        },
    ),
    *_table(
        "d2_resnet",
        {
            "MODEL.RESNETS.DEPTH": "model.backbone.depth",
            "MODEL.RESNETS.OUT_FEATURES": "model.backbone.out_features",
            "MODEL.RESNETS.STRIDE_IN_1X1": "model.backbone.stride_in_1x1",
            "MODEL.RESNETS.NORM": "model.backbone.norm",
        },
    ),
    *_table(
        "deformable_detr",
        {
            "MODEL.DETR.WEAK_WEIGHT": "model.loss.weak_weight",
            "MODEL.DETR.ORACLE_EVALUATION": "test.oracle",
            "MODEL.DETR.TEST_SCORE_THRESHOLD": "test.score_threshold",
            "MODEL.DETR.USE_ZEROSHOT_CLS": "model.classifier.use_zeroshot",
            "MODEL.DETR.ZEROSHOT_WEIGHT_PATH": ("model.classifier.embeddings", _data_path),
            "MODEL.DETR.ZEROSHOT_WEIGHT_DIM": "model.classifier.embed_dim",
            "MODEL.DETR.NORM_WEIGHT": "model.classifier.norm_weight",
            "MODEL.DETR.NORM_TEMP": "model.classifier.norm_temperature",
            "MODEL.DETR.USE_BIAS": "model.classifier.bias_init",
        },
    ),
    *_table(
        "centernet2",
        {
            "MODEL.MASK_ON": "model.roi_heads.mask_on",
            "MODEL.FPN.OUT_CHANNELS": "model.fpn.out_channels",
            "MODEL.FPN.IN_FEATURES": "model.fpn.in_features",
            "MODEL.ROI_HEADS.IN_FEATURES": "model.roi_heads.in_features",
            "MODEL.ROI_HEADS.NUM_CLASSES": "model.classifier.num_classes",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "model.roi_heads.batch_size_per_image",
            "MODEL.ROI_HEADS.POSITIVE_FRACTION": "model.roi_heads.positive_fraction",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST": "model.roi_heads.score_threshold",
            "MODEL.ROI_HEADS.NMS_THRESH_TEST": "model.roi_heads.nms_threshold",
            "MODEL.ROI_HEADS.MASK_WEIGHT": "model.roi_heads.mask_weight",
            "MODEL.ROI_BOX_CASCADE_HEAD.IOUS": "model.roi_heads.ious",
            "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS": "model.roi_heads.box_reg_weights",
            "MODEL.ROI_BOX_HEAD.FC_DIM": "model.roi_heads.fc_dim",
            "MODEL.ROI_BOX_HEAD.NUM_FC": "model.roi_heads.num_fc",
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": "model.roi_heads.pooler_resolution",
            "MODEL.ROI_BOX_HEAD.MULT_PROPOSAL_SCORE": "model.roi_heads.mult_proposal_score",
            "MODEL.ROI_BOX_HEAD.IMAGE_LABEL_LOSS": "model.roi_heads.image_label_loss",
            "MODEL.ROI_BOX_HEAD.WS_NUM_PROPS": "model.roi_heads.image_label_proposals",
            "MODEL.ROI_BOX_HEAD.IMAGE_LOSS_WEIGHT": "model.roi_heads.image_loss_weight",
            "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH": ("model.classifier.embeddings", _data_path),
            "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM": "model.classifier.embed_dim",
            "MODEL.ROI_BOX_HEAD.NORM_TEMP": "model.classifier.norm_temperature",
            "MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH": ("model.classifier.category_info", _data_path),
            "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": "model.loss.use_fed_loss",
            "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CAT": "model.loss.fed_loss_num_classes",
            "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT": "model.loss.fed_loss_freq_weight",
            "MODEL.ROI_MASK_HEAD.CONV_DIM": "model.roi_heads.mask_conv_dim",
            "MODEL.ROI_MASK_HEAD.NUM_CONV": "model.roi_heads.mask_num_conv",
            "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": "model.roi_heads.mask_pooler_resolution",
        },
    ),
    *_table(
        "centernet2",
        prefix="MODEL.CENTERNET.",
        entries={
            "FPN_STRIDES": "model.centernet.strides",
            "SOI": "model.centernet.sizes_of_interest",
            "NUM_BOX_CONVS": "model.centernet.num_box_convs",
            "PRIOR_PROB": "model.centernet.prior_prob",
            "MIN_RADIUS": "model.centernet.min_radius",
            "HM_MIN_OVERLAP": "model.centernet.hm_min_overlap",
            "HM_FOCAL_ALPHA": "model.centernet.hm_focal_alpha",
            "HM_FOCAL_BETA": "model.centernet.hm_focal_beta",
            "LOSS_GAMMA": "model.centernet.loss_gamma",
            "SIGMOID_CLAMP": "model.centernet.sigmoid_clamp",
            "IGNORE_HIGH_FP": "model.centernet.ignore_high_fp",
            "POS_WEIGHT": "model.centernet.pos_weight",
            "NEG_WEIGHT": "model.centernet.neg_weight",
            "REG_WEIGHT": "model.centernet.reg_weight",
            "INFERENCE_TH": "model.centernet.inference_threshold",
            "NMS_TH_TRAIN": "model.centernet.nms_threshold_train",
            "NMS_TH_TEST": "model.centernet.nms_threshold_test",
            "PRE_NMS_TOPK_TRAIN": "model.centernet.pre_nms_topk_train",
            "POST_NMS_TOPK_TRAIN": "model.centernet.post_nms_topk_train",
            "PRE_NMS_TOPK_TEST": "model.centernet.pre_nms_topk_test",
            "POST_NMS_TOPK_TEST": "model.centernet.post_nms_topk_test",
        },
    ),
    *_table(
        "decola",
        prefix="MODEL.DECOLA.",
        entries={
            "PER_PROMPT_TOPK": "model.decola.per_prompt_topk",
            "FIRST_STAGE_ENC_LOSS_PER_PROMPT_TOPK": "model.decola.enc_loss_per_prompt_topk",
            "USE_PIXEL_FEATURE_AS_QUERY": "model.decola.use_pixel_feature_as_query",
            "USE_PROMPT_EMBED_AS_QUERY": "model.decola.use_prompt_embed_as_query",
            "USE_PROMPT_EMBED_BIAS": "model.decola.use_prompt_embed_bias",
            "FIRST_STAGE_EMBED_NORM": "model.decola.first_stage_embed_norm",
            "SECOND_STAGE_EMBED_NORM": "model.decola.second_stage_embed_norm",
            "MULTI_CLASS_SECOND_STAGE": "model.decola.multi_class_second_stage",
            "PROB_A_OBJECT": "model.decola.prob_a_object",
            "USE_PSEUDO_LABELING_FOR_WEAK_LOSS": ("model.decola.use_pseudo_labeling_for_weak_loss"),
            "WEAK_LOSS_PSEUDO_TYPE": "model.decola.pseudo_box_choice",
            "PSEUDO_LOSS_MIN_SIZE_LIMIT": "model.decola.pseudo_min_area",
            "NO_BOX_LOSS_FOR_PSEUDO_LABELS": "model.decola.no_box_loss_for_pseudo_labels",
            "APPLY_LOSS_ONLY_WITHIN_IMAGE": "model.decola.apply_loss_only_within_image",
            "USE_ENCODER_CHECKPOINT": "model.decola.encoder_checkpoint",
            "USE_DECODER_CHECKPOINT": "model.decola.decoder_checkpoint",
            "FED_FREQ_WEIGHT": "model.loss.fed_loss_freq_weight",
            "ZS_WEIGHT_DIM": "model.classifier.embed_dim",
            "ZS_WEIGHT_PATH": ("model.classifier.embeddings", _data_path),
            "ZS_OBJECT_WEIGHT_PATH": ("model.classifier.object_embedding", _data_path),
            "ORACLE_EVALUATION": "test.oracle",
            "TEST_CLASS_CONDITIONED": "test.conditioned",
            "TEST_SCORE_THRESHOLD": "test.score_threshold",
        },
    ),
]
RULES_BY_KEY = {rule[0]: rule for rule in RULES}
#: Keys translated by dedicated code below rather than by a rule.
SPECIAL_KEYS = {
    "DATASETS.TRAIN",
    "WANDB.DISABLE_WANDB",
    "GEN_PSEDO_LABELS",
    "TEST.JUST_STORE_PREDICTIONS",
    "MODEL.BACKBONE.FREEZE_AT",
    "DATALOADER.USE_RFS",
}


@dataclass
class ImportResult:
    """The imported recipe and what the importer could not carry over."""

    recipe: Recipe
    unknown: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)


def load_original_tree(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load an original YAML with its ``_BASE_`` chain merged (the original's semantics)."""
    path = path.resolve()
    if path in _chain:
        raise ConfigError(f"{path}: {ORIGINAL_BASE_KEY} inheritance cycle")
    data = read_yaml(path)
    base = data.pop(ORIGINAL_BASE_KEY, None)
    if base is None:
        return data
    base_path = path.parent / str(base)
    if not base_path.is_file():
        raise ConfigError(f"{path}: {ORIGINAL_BASE_KEY} file not found: {base_path}")
    return deep_merge(load_original_tree(base_path, (*_chain, path)), data)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"A": {"B": 1}}`` -> ``{"A.B": 1}``, with tuple strings such as ``"(1, 2)"`` parsed."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = _literal(value)
    return flat


def _literal(value: Any) -> Any:
    """yacs (detectron2's config) reads ``"(480, 512)"`` as a tuple; so do we."""
    if isinstance(value, str) and value[:1] in "([" and value[-1:] in ")]":
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        return _listed(parsed)
    return value


def import_original(path: str | Path) -> ImportResult:
    """Convert an original detectron2-style DECOLA YAML (with its ``_BASE_`` files)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"original config not found: {path}")
    flat = flatten(load_original_tree(path))
    recipe: dict[str, Any] = {"name": path.stem}
    unknown: list[str] = []
    ignored: list[tuple[str, str]] = []

    architecture = _convert(flat, "MODEL.META_ARCHITECTURE", "deformable_detr")
    backbone = _convert(flat, "MODEL.BACKBONE.NAME", "d2_resnet")
    _set(recipe, "model.backbone.type", backbone)
    if backbone == "d2_resnet" and "MODEL.BACKBONE.FREEZE_AT" in flat:
        # detectron2's ResNet reads the generic freeze setting.
        _set(recipe, "model.backbone.freeze_at", flat["MODEL.BACKBONE.FREEZE_AT"])

    for key, value in flat.items():
        rule = RULES_BY_KEY.get(key)
        if rule is not None:
            _, target, convert, reader = rule
            if reader is None or reader in (architecture, backbone):
                _set(recipe, target, _apply(convert, value, key))
            else:
                ignored.append((key, f"read only by {reader}, not used by this recipe"))
        elif architecture == "centernet2" and key in C2_FIXED_VALUES:
            if _listed(value) != C2_FIXED_VALUES[key]:
                raise ConfigError(
                    f"{path}: {key} is {value!r}; decola's CenterNet2 implements only "
                    f"{C2_FIXED_VALUES[key]!r} (the released models' value)"
                )
            ignored.append((key, "the only value decola's CenterNet2 implements"))
        elif key in SETTLED_KEYS:
            ignored.append((key, SETTLED_KEYS[key]))
        elif key in SPECIAL_KEYS:
            continue
        elif key.startswith(IGNORED_PREFIXES):
            ignored.append((key, f"not read by the {architecture} family"))
        else:
            unknown.append(key)

    _import_train_sets(flat, recipe)
    if "WANDB.DISABLE_WANDB" in flat:
        _set(recipe, "logging.wandb.enabled", not flat["WANDB.DISABLE_WANDB"])
    if flat.get("GEN_PSEDO_LABELS") and flat.get("TEST.JUST_STORE_PREDICTIONS"):
        _set(recipe, "self_label.enabled", True)
    if flat.get("SEED") == -1:  # the original's "random seed" default; ours is fixed
        recipe.pop("seed", None)
    if flat.get("MODEL.MASK_ON") and architecture != "centernet2":
        raise ConfigError(f"{path}: MODEL.MASK_ON is set; mask heads are not supported")
    return ImportResult(validate_recipe(recipe, str(path)), unknown, ignored)


def _import_train_sets(flat: Mapping[str, Any], recipe: dict[str, Any]) -> None:
    """DATASETS.TRAIN plus the per-dataset DATALOADER lists -> ``data.train`` entries."""
    names = _listed(flat.get("DATASETS.TRAIN", []))
    if isinstance(names, str):
        names = [names]
    multi = flat.get("DATALOADER.SAMPLER_TRAIN") == "MultiDatasetSampler"
    per_dataset_bs = bool(flat.get("DATALOADER.USE_DIFF_BS_SIZE", False))
    aug = flat.get("INPUT.CUSTOM_AUG", "")
    entries = []
    for i, name in enumerate(names):
        entry: dict[str, Any] = {"name": name}
        if multi:
            entry["ratio"] = _at(flat, "DATALOADER.DATASET_RATIO", i, [1, 1])
            entry["ann_type"] = _at(flat, "DATALOADER.DATASET_ANN", i, ["box", "box"])
            entry["use_rfs"] = _at(flat, "DATALOADER.USE_RFS", i, [False, False])
            if per_dataset_bs:
                entry["batch_size"] = _at(flat, "DATALOADER.DATASET_BS", i, [8, 32])
                if aug == "ResizeShortestEdge":
                    entry["min_size"] = _at(
                        flat, "DATALOADER.DATASET_MIN_SIZES", i, [[640, 800], [320, 400]]
                    )
                    entry["max_size"] = _at(flat, "DATALOADER.DATASET_MAX_SIZES", i, [1333, 667])
                elif aug == "EfficientDetResizeCrop":
                    entry["input_size"] = _at(flat, "DATALOADER.DATASET_INPUT_SIZE", i, [640, 320])
                    entry["input_scale"] = _at(
                        flat, "DATALOADER.DATASET_INPUT_SCALE", i, [[0.1, 2.0], [0.5, 1.5]]
                    )
        entries.append(entry)
    if entries:
        _set(recipe, "data.train", entries)


def _at(flat: Mapping[str, Any], key: str, index: int, default: list[Any]) -> Any:
    values = _listed(flat.get(key, default))
    if index >= len(values):
        raise ConfigError(f"{key} has {len(values)} entries but DATASETS.TRAIN needs {index + 1}")
    return values[index]


def _convert(flat: Mapping[str, Any], key: str, default: str) -> str:
    if key not in flat:
        return default
    return _apply(RULES_BY_KEY[key][2], flat[key], key)


def _apply(convert: Converter, value: Any, key: str) -> Any:
    try:
        return convert(value)
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
