"""The BoxSup / Detic baseline: a stock two-stage Deformable DETR with Detic's zero-shot
classifier (spec §3), including the quirks released checkpoints depend on."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from decola_core.config.schema import PRIOR_BIAS, Recipe
from decola_core.errors import ConfigError, InputError
from decola_core.modeling.backbone import MaskedBackbone, build_backbone
from decola_core.modeling.boxsup.criterion import BaselineCriterion
from decola_core.modeling.classifier import DeticZeroShotClassifier
from decola_core.modeling.detector import DeformableDETRBase, DetectorOutput, ImageBatch
from decola_core.modeling.interface import TrainStep, register_family
from decola_core.modeling.resources import load_embeddings, load_fed_loss_weight, resolve_path
from decola_core.modeling.transformer import DeformableTransformer, FirstStageScores, Record


@register_family("deformable_detr")
class BoxSupDETR(DeformableDETRBase):
    """Object-mode-only detector: 300 (num_queries) class-agnostic proposals, all classes scored.

    ``class_embed[0..L-1]`` are Detic classifiers; ``class_embed[L]`` (first stage) is a plain
    Linear over all classes of which only channel 0 ranks the proposals.
    """

    def __init__(
        self,
        backbone,
        transformer,
        classifier: DeticZeroShotClassifier,
        fed_loss_weight: torch.Tensor,
        *,
        criterion: BaselineCriterion | None = None,
        **kwargs,
    ) -> None:
        super().__init__(backbone, transformer, **kwargs)
        num_layers = len(transformer.decoder.layers)
        num_classes = classifier.zs_weight.shape[1]
        first = nn.Linear(transformer.d_model, num_classes)
        nn.init.constant_(first.bias, PRIOR_BIAS)
        heads = [copy.deepcopy(classifier) for _ in range(num_layers)] + [first]
        self.class_embed = nn.ModuleList(heads)
        transformer.decoder.class_embed = self.class_embed
        self.num_classes = num_classes
        self.register_buffer("fed_loss_weight", fed_loss_weight.float())
        self.criterion = criterion or BaselineCriterion()

    def forward_batch(
        self, batch: ImageBatch, prompt_ids: torch.Tensor | None = None, *, record: Record = None
    ) -> DetectorOutput:
        """Detect in a preprocessed batch; the baseline has no class mode (``prompt_ids`` must
        be None)."""
        if prompt_ids is not None:
            raise InputError(
                "the BoxSup/Detic baseline has no class mode; restrict classes in "
                "post-processing instead (allowed_classes)"
            )
        srcs, masks, pos = self.feature_levels(batch, record)
        scores = FirstStageScores(self.class_embed[-1], None)
        out = self.transformer(srcs, masks, pos, scores=scores, record=record)
        layers = [
            {"pred_logits": self.class_embed[lvl](out.hs[lvl]), "pred_boxes": boxes}
            for lvl, boxes in enumerate(self.boxes_per_layer(out))
        ]
        return DetectorOutput(
            layers[-1]["pred_logits"],
            layers[-1]["pred_boxes"],
            None,
            aux=layers[:-1],
            transformer=out,
            image_sizes=batch.sizes,
        )

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, data_root: Path) -> BoxSupDETR:
        """The baseline network of ``recipe`` (architecture ``deformable_detr``)."""
        cfg = recipe.model
        t, c, loss = cfg.transformer, cfg.classifier, cfg.loss
        if not c.use_zeroshot:
            raise ConfigError(
                "model.classifier.use_zeroshot false (a learned linear classifier) is not "
                "supported; the baseline classifies with the CLIP class embeddings"
            )
        backbone = MaskedBackbone(build_backbone(cfg.backbone), t.in_features)
        transformer = DeformableTransformer.from_config(cfg, reinit_decoder=True)
        embeddings = load_embeddings(
            resolve_path(c.embeddings, data_root), c.num_classes, c.embed_dim, "class embeddings"
        )
        classifier = DeticZeroShotClassifier(
            t.hidden_dim,
            embeddings,
            norm_weight=c.norm_weight,
            bias_init=c.bias_init,
            temperature=c.norm_temperature,
        )
        fed = load_fed_loss_weight(
            resolve_path(c.category_info, data_root), c.num_classes, loss.fed_loss_freq_weight
        )
        criterion = BaselineCriterion(
            **BaselineCriterion.options(loss), weak_weight=loss.weak_weight
        )
        return cls(
            backbone,
            transformer,
            classifier,
            fed,
            criterion=criterion,
            num_feature_levels=t.num_feature_levels,
            pixel_mean=cfg.pixel_mean,
            pixel_std=cfg.pixel_std,
            input_format=recipe.data.format,
        )

    def training_step(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """Set losses on box batches; Detic's max-size loss on image-labelled ones."""
        out = self(step.images)
        # The buffer, not a copy taken at build time: the model may have moved device since.
        self.criterion.fed_loss_weight = self.fed_loss_weight
        return self.criterion(
            out,
            step.targets,
            image_labels=step.image_labels if step.weak else None,
            generator=step.generator,
        )
