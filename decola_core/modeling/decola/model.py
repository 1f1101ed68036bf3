"""The DECOLA detector (spec §1): a two-stage Deformable DETR whose first-stage query selection is
conditioned on class prompts (class mode, phase 1) or on "a object" (object mode, phase 2)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from decola_core.config.schema import Recipe
from decola_core.errors import ConfigError, InputError
from decola_core.modeling.backbone import MaskedBackbone, build_backbone
from decola_core.modeling.classifier import PromptClassifier
from decola_core.modeling.decola.criterion import DecolaCriterion
from decola_core.modeling.detector import DeformableDETRBase, DetectorOutput, ImageBatch
from decola_core.modeling.interface import TrainStep, register_family
from decola_core.modeling.postprocess import PseudoBoxes
from decola_core.modeling.prompts import training_prompts
from decola_core.modeling.pseudo_labels import select_pseudo_boxes
from decola_core.modeling.resources import load_embeddings, load_fed_loss_weight, resolve_path
from decola_core.modeling.transformer import DeformableTransformer, FirstStageScores, Record


@register_family("decola")
class DecolaDETR(DeformableDETRBase):
    """Language-conditioned Deformable DETR (spec §1): class mode and object mode."""

    supports_prompts = True

    def __init__(
        self,
        backbone,
        transformer,
        classifier: PromptClassifier,
        *,
        criterion: DecolaCriterion | None = None,
        prob_a_object: float = 1.0,
        teacher_for_image_labels: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(backbone, transformer, **kwargs)
        num_heads = len(transformer.decoder.layers) + 1
        self.class_embed = nn.ModuleList(copy.deepcopy(classifier) for _ in range(num_heads))
        transformer.decoder.class_embed = self.class_embed
        self.num_classes = classifier.num_classes
        self.criterion = criterion or DecolaCriterion()
        self.prob_a_object = prob_a_object
        self.teacher_for_image_labels = teacher_for_image_labels

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, data_root: Path) -> DecolaDETR:
        cfg = recipe.model
        t, c, d, loss = cfg.transformer, cfg.classifier, cfg.decola, cfg.loss
        if d.multi_class_second_stage:
            raise ConfigError(
                "model.decola.multi_class_second_stage (an ablation of the paper) is not supported"
            )
        backbone = MaskedBackbone(build_backbone(cfg.backbone), t.in_features)
        transformer = DeformableTransformer.from_config(
            cfg,
            per_prompt_topk=d.per_prompt_topk,
            use_pixel_feature_as_query=d.use_pixel_feature_as_query,
            self_attention=d.decoder_self_attention,
            prompt_embed_dim=c.embed_dim if d.use_prompt_embed_as_query else None,
            encoder_checkpoint=d.encoder_checkpoint,
            decoder_checkpoint=d.decoder_checkpoint,
        )
        classes = load_embeddings(
            resolve_path(c.embeddings, data_root), c.num_classes, c.embed_dim, "class embeddings"
        )
        obj = load_embeddings(
            resolve_path(c.object_embedding, data_root), 1, c.embed_dim, "object embedding"
        )
        fed = load_fed_loss_weight(
            resolve_path(c.category_info, data_root), c.num_classes, loss.fed_loss_freq_weight
        )
        classifier = PromptClassifier(
            t.hidden_dim,
            torch.cat([classes, obj]),
            fed,
            norm_weight=d.first_stage_embed_norm,
            use_bias=d.use_prompt_embed_bias,
            temperature=c.norm_temperature,
        )
        criterion = DecolaCriterion(
            **DecolaCriterion.options(loss),
            enc_loss_per_prompt_topk=d.enc_loss_per_prompt_topk,
            loss_only_within_image=d.apply_loss_only_within_image,
            no_box_loss_for_pseudo_labels=d.no_box_loss_for_pseudo_labels,
        )
        model = cls(
            backbone,
            transformer,
            classifier,
            criterion=criterion,
            prob_a_object=d.prob_a_object,
            teacher_for_image_labels=d.use_pseudo_labeling_for_weak_loss,
            num_feature_levels=t.num_feature_levels,
            pixel_mean=cfg.pixel_mean,
            pixel_std=cfg.pixel_std,
            input_format=recipe.data.format,
        )
        if d.second_stage_embed_norm != d.first_stage_embed_norm:
            for head in model.class_embed[:-1]:
                head.norm_weight = d.second_stage_embed_norm
        return model

    # ---- forward ------------------------------------------------------------------------------

    def first_stage_scores(self, prompt_ids: torch.Tensor | None, batch: int) -> FirstStageScores:
        """How the first stage scores encoder tokens: against K prompts (class mode: (K,) the
        same for every image, or (B, K) per image) or against "a object" (object mode)."""
        first_stage = self.class_embed[-1]
        if prompt_ids is None:
            return FirstStageScores(first_stage.object_logits, None, first_stage.zs_weight)
        prompts = prompt_ids.to(self.device)
        if prompts.dim() == 1:
            prompts = prompts.view(1, -1).expand(batch, -1)
        elif prompts.shape[0] != batch:
            raise InputError(f"per-image prompts {tuple(prompts.shape)} for {batch} images")
        return FirstStageScores(
            lambda memory: first_stage.against_prompts(memory, prompts),
            prompts,
            first_stage.zs_weight,
        )

    def forward_batch(
        self, batch: ImageBatch, prompt_ids: torch.Tensor | None = None, *, record: Record = None
    ) -> DetectorOutput:
        """Detect in a preprocessed batch.

        ``prompt_ids`` (K,) class ids selects class mode (every image uses the same K prompts;
        (B, K): K prompts per image); None selects object mode ("a object", all classes scored).
        """
        srcs, masks, pos = self.feature_levels(batch, record)
        class_mode = prompt_ids is not None
        out = self.transformer(
            srcs,
            masks,
            pos,
            scores=self.first_stage_scores(prompt_ids, batch.tensor.shape[0]),
            record=record,
        )
        layers = []
        for lvl, boxes in enumerate(self.boxes_per_layer(out)):
            head = self.class_embed[lvl]
            hs = out.hs[lvl]
            logits = head.own_prompt(hs, out.prompt_inds) if class_mode else head.all_classes(hs)
            layers.append({"pred_logits": logits, "pred_boxes": boxes})
        last = layers[-1]
        return DetectorOutput(
            pred_logits=last["pred_logits"],
            pred_boxes=last["pred_boxes"],
            prompt_inds=out.prompt_inds,
            aux=layers[:-1],
            transformer=out,
            image_sizes=batch.sizes,
        )

    # ---- training -----------------------------------------------------------------------------

    def needs_teacher(self, ann_types: set[str]) -> bool:
        return self.teacher_for_image_labels and "image" in ann_types

    def training_step(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """Object mode with probability ``prob_a_object`` (one draw for all ranks), else class
        mode prompted with the batch's classes; image-labelled batches are boxed by the teacher
        (in fp32, outside any autocast) when there is one."""
        targets = step.targets
        if step.weak and step.teacher is not None:
            with torch.autocast(self.device.type, enabled=False):
                pseudo = step.teacher(step.images, step.image_labels)
            targets = [{"labels": p.labels, "boxes": p.boxes} for p in pseudo]
        object_mode = step.rng.random() < self.prob_a_object
        prompts = None
        if not object_mode:
            prompts = training_prompts(
                [t["labels"] for t in targets],
                self.num_classes,
                image_labels=step.image_labels if step.weak else None,
                generator=step.generator,
            ).to(self.device)
        out = self(step.images, prompts)
        # The buffer, not a copy taken at build time: the model may have moved device since.
        self.criterion.fed_loss_weight = self.class_embed[-1].fed_loss_weight
        return self.criterion(out, targets, weak=step.weak)

    # ---- pseudo-labelling ---------------------------------------------------------------------

    def frozen_teacher(self, *, per_prompt_topk: int) -> DecolaDETR:
        teacher = copy.deepcopy(self).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.transformer.per_prompt_topk = per_prompt_topk
        return teacher

    @torch.no_grad()
    def pseudo_label(
        self,
        images: list[torch.Tensor],
        image_labels: list[torch.Tensor],
        *,
        choice: str = "max-score",
        min_area: float = 0.0,
        per_image_prompts: bool = False,
    ) -> list[PseudoBoxes]:
        """Prompted with the union of the images' labels (or, with ``per_image_prompts``, each
        image with its own); per image and label the best query."""
        if per_image_prompts:
            own = [torch.unique(labels) for labels in image_labels]
            if len({len(labels) for labels in own}) != 1:
                raise InputError("per-image prompts need the same number of labels per image")
            prompts = torch.stack([labels.to(self.device) for labels in own])
        else:
            prompts = torch.unique(torch.cat(image_labels))
        out = self(images, prompts)
        return select_pseudo_boxes(out, image_labels, choice=choice, min_area=min_area)
