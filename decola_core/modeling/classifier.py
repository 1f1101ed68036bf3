"""Zero-shot classifiers over frozen CLIP text embeddings (DECOLA's prompt classifier and the
Detic/BoxSup baseline's), with the original parameter and buffer names."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from decola_core.config.schema import PRIOR_BIAS
from decola_core.errors import InputError


class PromptClassifier(nn.Module):
    """DECOLA's classifier: cosine similarity x temperature between a projected query feature and
    prompt embeddings, plus a learned scalar bias.

    ``zs_weight`` holds ``num_classes`` class rows followed by the "a object" row, L2-normalised
    when ``norm_weight``. ``fed_loss_weight`` holds image_count ** exponent per class.
    """

    def __init__(
        self,
        hidden_dim: int,
        embeddings: torch.Tensor,
        fed_loss_weight: torch.Tensor,
        *,
        norm_weight: bool = True,
        use_bias: bool = True,
        temperature: float = 50.0,
    ) -> None:
        super().__init__()
        self.num_classes = embeddings.shape[0] - 1
        self.norm_weight = norm_weight
        self.temperature = temperature
        self.linear = nn.Linear(hidden_dim, embeddings.shape[1])
        if use_bias:
            self.cls_bias = nn.Parameter(torch.full((1,), PRIOR_BIAS))
        else:
            self.cls_bias = None
        weight = embeddings.float()
        if norm_weight:
            weight = F.normalize(weight, p=2, dim=1)
        self.register_buffer("zs_weight", weight)
        self.register_buffer("fed_loss_weight", fed_loss_weight.float())

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        """Replace the class rows (a new vocabulary); the "a object" row stays."""
        check_embedding_dim(embeddings, self.zs_weight.shape[1])
        weight = embeddings.float().to(self.zs_weight.device)
        if self.norm_weight:
            weight = F.normalize(weight, p=2, dim=1)
        self.zs_weight = torch.cat([weight, self.zs_weight[self.num_classes :]])
        self.num_classes = weight.shape[0]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        u = self.linear(x)
        return self.temperature * F.normalize(u, p=2, dim=-1) if self.norm_weight else u

    def _bias(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.cls_bias if self.cls_bias is not None else logits

    def against_prompts(self, x: torch.Tensor, prompt_ids: torch.Tensor) -> torch.Tensor:
        """x (B, S, C), prompt_ids (B, K) rows of zs_weight -> (B, S, K) logits."""
        embeds = self.zs_weight[prompt_ids]  # (B, K, D)
        return self._bias(torch.bmm(self.project(x), embeds.transpose(1, 2)))

    def object_logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, C) -> (B, S, 1) logits against the "a object" row."""
        return self._bias(self.project(x) @ self.zs_weight[self.num_classes :].t())

    def all_classes(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, Q, C) -> (B, Q, num_classes) logits against every class row."""
        return self._bias(self.project(x) @ self.zs_weight[: self.num_classes].t())

    def own_prompt(self, x: torch.Tensor, prompt_inds: torch.Tensor) -> torch.Tensor:
        """x (B, Q, C), prompt_inds (B, Q) -> (B, Q, 1): each query against its own prompt."""
        embeds = self.zs_weight[prompt_inds]  # (B, Q, D)
        return self._bias((self.project(x) * embeds).sum(-1, keepdim=True))


class DeticZeroShotClassifier(nn.Module):
    """The baseline's second-stage classifier, faithful to the original (spec §3.1, §8.1.3).

    ``zs_weight`` is stored (D, num_classes) with columns normalised. The projected feature is
    normalised along dim 1, which for (B, Q, D) inputs is the *query* axis: a quirk the released
    checkpoints were trained with.
    """

    def __init__(
        self,
        hidden_dim: int,
        embeddings: torch.Tensor,
        *,
        norm_weight: bool = True,
        bias_init: float = PRIOR_BIAS,
        temperature: float = 50.0,
    ) -> None:
        super().__init__()
        self.norm_weight = norm_weight
        self.temperature = temperature
        self.linear = nn.Linear(hidden_dim, embeddings.shape[1])
        weight = embeddings.float().t().contiguous()
        if norm_weight:
            weight = F.normalize(weight, p=2, dim=0)
        self.register_buffer("zs_weight", weight)
        self.cls_bias = nn.Parameter(torch.full((1,), bias_init)) if bias_init < 0 else None

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        """Replace the class columns (a new vocabulary)."""
        check_embedding_dim(embeddings, self.zs_weight.shape[0])
        weight = embeddings.float().t().contiguous().to(self.zs_weight.device)
        self.zs_weight = F.normalize(weight, p=2, dim=0) if self.norm_weight else weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.linear(x)
        if self.norm_weight:
            u = self.temperature * F.normalize(u, p=2, dim=1)
        logits = u @ self.zs_weight
        return logits + self.cls_bias if self.cls_bias is not None else logits


def set_vocabulary(model: nn.Module, embeddings: torch.Tensor) -> None:
    """Point every zero-shot classifier of ``model`` at new (num_classes, D) class embeddings,
    for detecting classes the model was not built with (inference only)."""
    found = False
    for module in model.modules():
        if hasattr(module, "set_class_embeddings"):
            module.set_class_embeddings(embeddings)
            found = True
    if not found:
        raise InputError("the model has no zero-shot classifier whose vocabulary can change")
    if "num_classes" in vars(model):  # a stored count (a model may derive it instead)
        model.num_classes = embeddings.shape[0]


def check_embedding_dim(embeddings: torch.Tensor, dim: int) -> None:
    if embeddings.dim() != 2 or embeddings.shape[1] != dim:
        raise InputError(
            f"class embeddings of shape {tuple(embeddings.shape)}; the model expects (N, {dim})"
        )
