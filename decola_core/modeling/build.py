"""``build_model(recipe)``: the native network for a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from decola_core.config.schema import Recipe
from decola_core.errors import ConfigError
from decola_core.modeling.backbone import MaskedBackbone, build_backbone
from decola_core.modeling.classifier import PromptClassifier
from decola_core.modeling.detector import DecolaDETR
from decola_core.modeling.transformer import DeformableTransformer


def _resolve(path: str, data_root: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(data_root) / candidate


def class_names(recipe: Recipe, data_root: Path | str = "datasets") -> list[str]:
    """The names of the recipe's classes (0-based class id order), from its category info."""
    c = recipe.model.classifier
    path = _resolve(c.category_info, Path(data_root))
    categories = read_categories(path, c.num_classes)
    names = [cat.get("name") for cat in categories]
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: every category needs a 'name'")
    return names


def load_embeddings(path: Path, rows: int | None, dim: int, what: str) -> torch.Tensor:
    """A (rows, dim) float32 tensor from a .npy file, checked against the recipe."""
    if not path.is_file():
        raise ConfigError(
            f"{what} file not found: {path} (get it with 'decola zoo download' or set the path "
            "in the recipe)"
        )
    try:
        array = np.load(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable .npy file ({err})") from None
    if array.ndim != 2 or array.shape[1] != dim or (rows is not None and array.shape[0] != rows):
        expected = f"({rows if rows is not None else 'N'}, {dim})"
        raise ConfigError(f"{path}: {what} has shape {array.shape}, expected {expected}")
    return torch.from_numpy(array.astype(np.float32))


def read_categories(path: Path, num_classes: int) -> list[dict]:
    """The categories of a category-info file (a list, or an LVIS file's ``categories``), in id
    order, checked against the recipe's class count."""
    if not path.is_file():
        raise ConfigError(
            f"category info file not found: {path} (decola zoo download lvis-category-info)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable JSON file ({err})") from None
    categories = data.get("categories") if isinstance(data, dict) else data
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), int) for c in categories
    ):
        raise ConfigError(f"{path}: expected a list of categories, each with an integer 'id'")
    if len(categories) != num_classes:
        raise ConfigError(
            f"{path}: {len(categories)} categories, the recipe has {num_classes} classes"
        )
    return sorted(categories, key=lambda c: c["id"])


def load_fed_loss_weight(path: Path, num_classes: int, exponent: float) -> torch.Tensor:
    """image_count ** exponent per class, in category-id order, from a category-info file."""
    try:
        counts = [c["image_count"] for c in read_categories(path, num_classes)]
    except KeyError:
        raise ConfigError(f"{path}: every category needs 'image_count'") from None
    return torch.tensor(counts, dtype=torch.float32) ** exponent


def build_transformer(cfg, **options) -> DeformableTransformer:
    """The deformable transformer sized by ``model.transformer``; ``options`` are model-specific."""
    t = cfg.transformer
    return DeformableTransformer(
        d_model=t.hidden_dim,
        nhead=t.nheads,
        num_encoder_layers=t.enc_layers,
        num_decoder_layers=t.dec_layers,
        dim_feedforward=t.dim_feedforward,
        dropout=t.dropout,
        num_feature_levels=t.num_feature_levels,
        num_queries=t.num_queries,
        look_forward_twice=t.look_forward_twice,
        **options,
    )


def build_model(recipe: Recipe, *, data_root: Path | str = "datasets") -> nn.Module:
    """Build the (randomly initialised) network of ``recipe``.

    Class embeddings and category statistics are read from the recipe's files below
    ``data_root``; weights are loaded separately with :func:`load_weights`.
    """
    cfg = recipe.model
    if cfg.architecture != "decola":
        from decola_core.modeling.baseline import build_baseline

        return build_baseline(recipe, data_root=Path(data_root))
    t = cfg.transformer
    if cfg.decola.multi_class_second_stage:
        raise ConfigError(
            "model.decola.multi_class_second_stage (an ablation of the paper) is not supported"
        )
    body = build_backbone(cfg.backbone)
    backbone = MaskedBackbone(body, t.in_features)
    transformer = build_transformer(
        cfg,
        per_prompt_topk=cfg.decola.per_prompt_topk,
        use_pixel_feature_as_query=cfg.decola.use_pixel_feature_as_query,
        self_attention=cfg.decola.decoder_self_attention,
        prompt_embed_dim=cfg.classifier.embed_dim if cfg.decola.use_prompt_embed_as_query else None,
        encoder_checkpoint=cfg.decola.encoder_checkpoint,
        decoder_checkpoint=cfg.decola.decoder_checkpoint,
    )
    c = cfg.classifier
    root = Path(data_root)
    classes = load_embeddings(
        _resolve(c.embeddings, root), c.num_classes, c.embed_dim, "class embeddings"
    )
    obj = load_embeddings(_resolve(c.object_embedding, root), 1, c.embed_dim, "object embedding")
    fed = load_fed_loss_weight(
        _resolve(c.category_info, root), c.num_classes, cfg.loss.fed_loss_freq_weight
    )
    classifier = PromptClassifier(
        t.hidden_dim,
        torch.cat([classes, obj]),
        fed,
        norm_weight=cfg.decola.first_stage_embed_norm,
        use_bias=cfg.decola.use_prompt_embed_bias,
        temperature=c.norm_temperature,
    )
    model = DecolaDETR(
        backbone,
        transformer,
        classifier,
        num_feature_levels=t.num_feature_levels,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
    )
    if cfg.decola.second_stage_embed_norm != cfg.decola.first_stage_embed_norm:
        for head in model.class_embed[:-1]:
            head.norm_weight = cfg.decola.second_stage_embed_norm
    return model
