"""The pydantic schema of a training/evaluation recipe.

A recipe describes one whole configuration: the network, the data, the optimiser, the test
protocol, logging and where outputs go. Defaults equal the original system's defaults
(detectron2 + Detic + DECOLA config builders) wherever those affect the DETR-family models, so
that an original YAML imported key by key (``decola config import``) and a recipe written in
this schema resolve to the same values. Deliberate differences are documented on the field.

Every model forbids unknown keys, so a misspelt key is an error that names it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The focal-loss prior bias of the original classifiers: -log((1 - 0.01) / 0.01).
PRIOR_BIAS = -4.59511985013459


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class TimmResNetBackbone(Section):
    """A timm-layout ResNet (the ImageNet-21k R50 of the released models), FrozenBN by default."""

    type: Literal["timm_resnet"] = "timm_resnet"
    name: str = Field("resnet50", description="timm architecture: resnet18, resnet50, ...")
    out_levels: list[int] = Field(
        default_factory=lambda: [3, 4, 5],
        description="Outputs as log2(stride); (3, 4, 5) = layer2..layer4 at strides 8/16/32.",
    )
    norm: Literal["FrozenBN", "BN", "SyncBN"] = "FrozenBN"
    freeze_at: int = Field(0, ge=0, description="Freeze the stem (>=1) and stages (>=2, ...).")


class SwinBackbone(Section):
    """Swin Transformer; the size fixes embed dim, depths, heads, window and drop-path."""

    type: Literal["swin"] = "swin"
    size: Literal["T", "S", "B", "B-22k", "B-22k-384", "L-22k", "L-22k-384"] = "T"
    out_indices: list[int] = Field(
        default_factory=lambda: [1, 2, 3], description="Stages returned (swin1..swin3)."
    )
    use_checkpoint: bool = Field(False, description="Activation checkpointing in Swin blocks.")


class D2ResNetBackbone(Section):
    """detectron2-layout ResNet (the ImageNet-1k R50 baseline); detectron2's defaults."""

    type: Literal["d2_resnet"] = "d2_resnet"
    depth: int = Field(50, description="50, 101 or 152.")
    out_features: list[str] = Field(default_factory=lambda: ["res4"])
    stride_in_1x1: bool = True
    norm: Literal["FrozenBN", "BN", "SyncBN", "GN"] = "FrozenBN"
    freeze_at: int = Field(2, ge=0, description="Freeze the stem (>=1) and stages (>=2, ...).")


BackboneConfig = Annotated[
    TimmResNetBackbone | SwinBackbone | D2ResNetBackbone, Field(discriminator="type")
]


class TransformerConfig(Section):
    """Two-stage deformable transformer sizes (MODEL.DETR.* in the original)."""

    hidden_dim: int = Field(256, gt=0)
    nheads: int = Field(8, gt=0)
    enc_layers: int = Field(6, ge=0)
    dec_layers: int = Field(6, gt=0)
    dim_feedforward: int = Field(1024, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    num_feature_levels: int = Field(4, gt=0)
    num_queries: int = Field(300, gt=0, description="Object-mode (and baseline) query count.")
    look_forward_twice: bool = True
    in_features: list[str] = Field(default_factory=lambda: ["res3", "res4", "res5"])


class ClassifierConfig(Section):
    """The zero-shot cosine classifiers over frozen CLIP text embeddings."""

    num_classes: int = Field(80, gt=0, description="Rows of the class-embedding file.")
    embeddings: str = Field(
        "metadata/lvis_v1_clip_a+cname.npy",
        description="(num_classes x embed_dim) .npy; relative paths resolve against the data root.",
    )
    object_embedding: str = Field(
        "metadata/lvis_v1_clip_a+object.npy",
        description="(1 x embed_dim) 'a object' embedding appended as the last row (DECOLA).",
    )
    embed_dim: int = Field(512, gt=0)
    category_info: str = Field(
        "metadata/lvis_v1_train_cat_info.json",
        description="Category list with image_count, used for the federated-loss weights.",
    )
    use_zeroshot: bool = Field(
        True, description="Baseline: the CLIP zero-shot classifier (a linear one is not supported)."
    )
    norm_weight: bool = Field(True, description="Baseline: cosine scoring.")
    norm_temperature: float = Field(50.0, gt=0)
    bias_init: float = Field(
        PRIOR_BIAS, description="Baseline: a negative value makes a learnable bias with it."
    )


class DecolaConfig(Section):
    """Options of the language-conditioned model (MODEL.DECOLA.* in the original)."""

    per_prompt_topk: int = Field(300, gt=0, description="N queries per prompt in class mode.")
    enc_loss_per_prompt_topk: int = Field(
        10000, description="Top-T tokens per prompt in the class-mode encoder loss; <=0 = all."
    )
    use_pixel_feature_as_query: bool = False
    use_prompt_embed_as_query: bool = False
    use_prompt_embed_bias: bool = False
    first_stage_embed_norm: bool = True
    second_stage_embed_norm: bool = True
    multi_class_second_stage: bool = False
    prob_a_object: float = Field(
        1.0, ge=0.0, le=1.0, description="Probability of object mode per training iteration."
    )
    decoder_self_attention: Literal["grouped", "block_diagonal"] = Field(
        "grouped",
        description="grouped = the original's memory-efficient grouping (what released "
        "checkpoints were trained with); block_diagonal = attention within each prompt only.",
    )
    use_pseudo_labeling_for_weak_loss: bool = Field(
        False, description="Phase 2 online: a frozen phase-1 teacher labels image-label batches."
    )
    pseudo_box_choice: Literal["max-score", "max-size"] = Field(
        "max-score", description="Which query becomes the pseudo box of an image label."
    )
    pseudo_min_area: float = Field(
        0.0, ge=0.0, description="Minimum normalised area of pseudo-box candidates."
    )
    no_box_loss_for_pseudo_labels: bool = False
    apply_loss_only_within_image: bool = False
    encoder_checkpoint: bool = Field(False, description="Activation checkpointing (encoder).")
    decoder_checkpoint: bool = Field(False, description="Activation checkpointing (decoder).")


class LossConfig(Section):
    """Matching costs, loss weights and the federated loss."""

    class_weight: float = Field(2.0, ge=0)
    bbox_l1_weight: float = Field(5.0, ge=0)
    giou_weight: float = Field(2.0, ge=0)
    focal_alpha: float = Field(0.25, ge=0, le=1)
    use_fed_loss: bool = True
    fed_loss_num_classes: int = Field(50, gt=0)
    fed_loss_freq_weight: float = Field(0.5, ge=0)
    weak_weight: float = Field(0.1, ge=0, description="Baseline max-size image-label loss.")


class FPNConfig(Section):
    """CenterNet2: the feature pyramid on three backbone outputs (P6/P7 from P5)."""

    out_channels: int = Field(256, gt=0)
    in_features: list[str] = Field(
        default_factory=lambda: ["layer3", "layer4", "layer5"],
        description="Backbone outputs at strides 8/16/32 (layer3..5 or swin1..3).",
    )


class CenterNetConfig(Section):
    """CenterNet2's class-agnostic CenterNet proposal generator (MODEL.CENTERNET.*)."""

    strides: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128])
    sizes_of_interest: list[list[float]] = Field(
        default_factory=lambda: [[0, 80], [64, 160], [128, 320], [256, 640], [512, 10000000]],
        description="Half-diagonal range of the boxes each level learns (inclusive).",
    )
    num_box_convs: int = Field(4, ge=0)
    prior_prob: float = Field(0.01, gt=0, lt=1)
    min_radius: float = Field(4.0, ge=0)
    hm_min_overlap: float = Field(0.8, gt=0, lt=1)
    hm_focal_alpha: float = 0.25
    hm_focal_beta: float = 4.0
    loss_gamma: float = 2.0
    sigmoid_clamp: float = Field(1e-4, ge=0)
    ignore_high_fp: float = Field(0.85, description="Negatives scoring above are ignored.")
    pos_weight: float = Field(0.5, ge=0)
    neg_weight: float = Field(0.5, ge=0)
    reg_weight: float = Field(1.0, ge=0)
    inference_threshold: float = Field(1e-4, ge=0)
    nms_threshold_train: float = Field(0.9, gt=0, le=1)
    nms_threshold_test: float = Field(0.9, gt=0, le=1)
    pre_nms_topk_train: int = Field(4000, gt=0, description="Per level and image.")
    post_nms_topk_train: int = Field(2000, gt=0)
    pre_nms_topk_test: int = Field(1000, gt=0, description="Per level and image.")
    post_nms_topk_test: int = Field(256, gt=0)


class RoIHeadsConfig(Section):
    """CenterNet2's cascade ROI heads with Detic's classifier and the mask head."""

    in_features: list[str] = Field(default_factory=lambda: ["p3", "p4", "p5"])
    ious: list[float] = Field(
        default_factory=lambda: [0.6, 0.7, 0.8], description="Foreground IoU of each stage."
    )
    box_reg_weights: list[list[float]] = Field(
        default_factory=lambda: [[10, 10, 5, 5], [20, 20, 10, 10], [30, 30, 15, 15]]
    )
    batch_size_per_image: int = Field(512, gt=0)
    positive_fraction: float = Field(0.25, gt=0, le=1)
    fc_dim: int = Field(1024, gt=0)
    num_fc: int = Field(2, gt=0)
    pooler_resolution: int = Field(7, gt=0)
    score_threshold: float = Field(0.02, ge=0, le=1)
    nms_threshold: float = Field(0.5, gt=0, le=1)
    mult_proposal_score: bool = Field(True, description="Test score x proposal score, sqrt.")
    image_label_loss: Literal["max_size", ""] = Field(
        "max_size", description="Loss of image-labelled batches ('' = none)."
    )
    image_label_proposals: int = Field(
        128, gt=0, description="Top proposals an image-labelled batch uses (WS_NUM_PROPS)."
    )
    image_loss_weight: float = Field(0.1, ge=0)
    mask_on: bool = True
    mask_conv_dim: int = Field(256, gt=0)
    mask_num_conv: int = Field(4, ge=0)
    mask_pooler_resolution: int = Field(14, gt=0)
    mask_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _check_stages(self) -> RoIHeadsConfig:
        if len(self.box_reg_weights) != len(self.ious) or any(
            len(w) != 4 for w in self.box_reg_weights
        ):
            raise ValueError("box_reg_weights needs 4 values for each stage of ious")
        return self


class ModelConfig(Section):
    """The network: architecture, backbone, transformer, classifiers and losses."""

    architecture: Literal["decola", "deformable_detr", "centernet2"] = Field(
        "deformable_detr",
        description="decola = language-conditioned DECOLA; deformable_detr = the BoxSup / "
        "Detic two-stage Deformable DETR baseline; centernet2 = Detic's CenterNet2 (C2).",
    )
    weights: str = Field(
        "",
        description="Initial weights: a file path or 'zoo:<name>' (empty = random init).",
    )
    pixel_mean: list[float] = Field(
        default_factory=lambda: [103.53, 116.28, 123.675],
        description="Per-channel mean in the order of data.format (detectron2's BGR default).",
    )
    pixel_std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0])
    with_image_labels: bool = Field(
        False, description="Train with image-labelled batches (ann_type 'image')."
    )
    backbone: BackboneConfig = Field(default_factory=D2ResNetBackbone)
    transformer: TransformerConfig = Field(default_factory=TransformerConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    decola: DecolaConfig = Field(default_factory=DecolaConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    fpn: FPNConfig = Field(default_factory=FPNConfig)
    centernet: CenterNetConfig = Field(default_factory=CenterNetConfig)
    roi_heads: RoIHeadsConfig = Field(default_factory=RoIHeadsConfig)

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise ValueError("pixel_mean and pixel_std need 3 values (RGB)")
        if self.transformer.hidden_dim % self.transformer.nheads:
            raise ValueError(
                f"transformer.hidden_dim ({self.transformer.hidden_dim}) must be divisible by "
                f"transformer.nheads ({self.transformer.nheads})"
            )
        return self


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class TrainDataset(Section):
    """One training set and the settings that belong to it in a multi-dataset mix.

    Fields left unset (None) fall back to the global data settings.
    """

    name: str
    ratio: float = Field(1.0, gt=0, description="Relative sampling share in a mix.")
    ann_type: Literal["box", "image"] = Field(
        "box", description="box = box annotations; image = image-level labels only."
    )
    use_rfs: bool = Field(False, description="Repeat-factor sampling inside this dataset.")
    batch_size: int | None = Field(None, gt=0, description="Images per GPU for this dataset.")
    min_size: list[int] | None = Field(
        None, description="Short-side sizes: a [lo, hi] range or a list of choices."
    )
    max_size: int | None = Field(None, gt=0)
    input_size: int | None = Field(
        None, gt=0, description="EfficientDet resize-crop: the square output size for this set."
    )
    input_scale: list[float] | None = Field(
        None, description="EfficientDet resize-crop: the [lo, hi] random scale for this set."
    )
    score_threshold: float = Field(
        0.0, ge=0.0, le=1.0, description="Drop pseudo boxes scoring below this (per box)."
    )


class CropConfig(Section):
    enabled: bool = False
    type: Literal["relative_range", "relative", "absolute", "absolute_range"] = "relative_range"
    size: list[float] = Field(default_factory=lambda: [0.9, 0.9])


class DatasetDeclaration(Section):
    """A dataset declared in a recipe by path, so a new data set needs no code."""

    image_root: str
    annotations: str
    ann_type: Literal["box", "image"] = "box"
    evaluator: Literal["lvis", "coco", "none"] = "lvis"


class DataConfig(Section):
    """Training and test data, augmentation and sampling."""

    train: list[TrainDataset] = Field(default_factory=list)
    test: list[str] = Field(default_factory=list)
    datasets: dict[str, DatasetDeclaration] = Field(
        default_factory=dict, description="Extra datasets by path, usable in train/test."
    )
    sampler: Literal["training", "repeat_factor", "multi_dataset"] = "training"
    repeat_threshold: float = Field(0.0, ge=0.0)
    multi_dataset_grouping: bool = False
    aspect_ratio_grouping: bool = True
    filter_empty_annotations: bool = True
    num_workers: int = Field(4, ge=0)
    augmentation: Literal[
        "default", "detr", "resize_shortest_edge", "efficientdet_resize_crop", "lsj"
    ] = "default"
    format: Literal["RGB", "BGR"] = "BGR"
    min_size_train: list[int] = Field(default_factory=lambda: [800])
    min_size_train_sampling: Literal["choice", "range", "range_by_clipping"] = "choice"
    max_size_train: int = Field(1333, gt=0)
    train_size: int = Field(
        640,
        gt=0,
        description="EfficientDet resize-crop: the square output size (INPUT.TRAIN_SIZE).",
    )
    scale_range: list[float] = Field(
        default_factory=lambda: [0.1, 2.0],
        description="EfficientDet resize-crop: the random scale range (INPUT.SCALE_RANGE).",
    )
    crop: CropConfig = Field(
        default_factory=CropConfig, description="The random crop of the detr augmentation."
    )
    random_flip: Literal["horizontal", "vertical", "none"] = "horizontal"

    @model_validator(mode="after")
    def _check_mix(self) -> DataConfig:
        names = [d.name for d in self.train]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes and self.sampler != "multi_dataset":
            raise ValueError(f"train lists {dupes} more than once")
        if len(self.train) > 1 and self.sampler != "multi_dataset":
            raise ValueError(
                f"{len(self.train)} training sets need sampler 'multi_dataset' "
                f"(got '{self.sampler}')"
            )
        return self


# --------------------------------------------------------------------------------------------
# Solver, test, logging
# --------------------------------------------------------------------------------------------


class GradientClipConfig(Section):
    enabled: bool = False
    type: Literal["full_model", "value", "norm"] = "value"
    value: float = Field(1.0, gt=0)
    norm_type: float = 2.0


class SolverConfig(Section):
    """Optimiser, schedule, clipping, mixed precision and checkpoint period."""

    optimizer: Literal["adamw", "sgd"] = "sgd"
    base_lr: float = Field(0.001, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = 0.9
    backbone_multiplier: float = Field(1.0, ge=0)
    custom_multiplier: float = Field(1.0, ge=0)
    custom_multiplier_names: list[str] = Field(default_factory=list)
    ims_per_batch: int = Field(16, gt=0, description="Total images per step over all GPUs.")
    max_iter: int = Field(40000, gt=0)
    train_iter: int = Field(0, ge=0, description=">0 stops early; the schedule keeps max_iter.")
    lr_scheduler: Literal["multistep", "cosine"] = "multistep"
    steps: list[int] = Field(default_factory=lambda: [30000])
    gamma: float = 0.1
    warmup_method: Literal["linear", "constant"] = "linear"
    warmup_factor: float = Field(0.001, ge=0)
    warmup_iters: int = Field(1000, ge=0)
    clip_gradients: GradientClipConfig = Field(default_factory=GradientClipConfig)
    amp: Literal["off", "backbone-fp16", "fp16", "bf16"] = Field(
        "off",
        description="backbone-fp16 = the original FP16 mode (backbone under autocast, loss "
        "scaling); fp16/bf16 = whole model under autocast (deformable attention stays fp32).",
    )
    compile: bool = Field(
        False,
        description="Run the network through torch.compile (DETR families: the whole network "
        "step; CenterNet2: backbone and FPN). Used by train, eval, predict and self-label.",
    )
    checkpoint_period: int = Field(5000, gt=0)

    @model_validator(mode="after")
    def _check_steps(self) -> SolverConfig:
        if self.lr_scheduler != "multistep":  # steps are read by the multi-step schedule only
            return self
        if any(s >= self.max_iter for s in self.steps):
            raise ValueError(f"steps {self.steps} must all be below max_iter {self.max_iter}")
        if self.steps != sorted(self.steps):
            raise ValueError(f"steps {self.steps} must be increasing")
        return self


class TestConfig(Section):
    """Inference and evaluation settings."""

    __test__ = False  # not a pytest test class

    detections_per_image: int = Field(300, gt=0)
    detections_per_class_per_image: int = Field(-1, description="-1 = no per-class cap.")
    batch_size: int = Field(1, gt=0)
    min_size: int = Field(800, gt=0)
    max_size: int = Field(1333, gt=0)
    conditioned: bool = Field(
        False, description="DECOLA: class mode at test time (prompts = classes)."
    )
    oracle: bool = Field(
        False, description="Prompts (DECOLA) or allowed classes (baseline) = the GT classes."
    )
    score_threshold: float = Field(0.0, ge=0.0, le=1.0)


class SelfLabelConfig(Section):
    """Offline pseudo-labelling of image-labelled data with a phase-1 model."""

    enabled: bool = False
    min_sizes: list[int] = Field(
        default_factory=list, description="Test short sides to label at (decola self-label)."
    )
    prediction_name: str = Field(
        "", description="Default output folder of decola self-label: <output_dir>/<this>."
    )


class WandbConfig(Section):
    enabled: bool = False
    project: str = ""
    group: str = ""
    run_name: str = "decola"
    vis_period: int = Field(0, ge=0)


class LoggingConfig(Section):
    period: int = Field(20, gt=0, description="Iterations between metric writes.")
    wandb: WandbConfig = Field(default_factory=WandbConfig)


class Recipe(Section):
    """A complete recipe. ``name`` is filled in from the file name when loaded."""

    name: str = ""
    description: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    test: TestConfig = Field(default_factory=TestConfig)
    self_label: SelfLabelConfig = Field(default_factory=SelfLabelConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    output_dir: str = Field("output/{name}", description="'{name}' becomes the recipe name.")
    seed: int = Field(
        0,
        description="Base seed (each rank adds its rank). The original drew a random seed; "
        "-1 restores that.",
    )

    def resolved_output_dir(self) -> str:
        """The output directory with ``{name}`` replaced by the recipe name."""
        return self.output_dir.replace("{name}", self.name or "recipe")
