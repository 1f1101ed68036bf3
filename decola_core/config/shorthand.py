"""Shorthand recipe selection: ``--phase/--dataset/--backbone/--baseline`` -> a recipe name."""

from __future__ import annotations

from typing import Literal

from decola_core.config.loader import list_recipes
from decola_core.errors import ConfigError

Phase = Literal[1, 2]
DatasetChoice = Literal["lvis", "lvis-base", "toy"]
BackboneChoice = Literal["r50-21k", "r50-1k", "swin-b", "swin-l"]
BaselineChoice = Literal["boxsup", "detic"]
LabelsChoice = Literal["online", "offline"]

DATASET_TOKENS = {"lvis": "L", "lvis-base": "Lbase"}
BACKBONE_TOKENS = {"r50-21k": "R5021k", "r50-1k": "R501k", "swin-b": "SwinB", "swin-l": "SwinL"}
TOY_RECIPES = {
    ("phase", 1): "toy/DECOLA_PHASE1_Toy",
    ("phase", 2): "toy/DECOLA_PHASE2_Toy",
    ("baseline", "boxsup"): "toy/BoxSup-DeformDETR_Toy",
    ("baseline", "detic"): "toy/BoxSup+ST-DeformDETR_Toy",
}
DEFAULT_DATASET: DatasetChoice = "lvis-base"
DEFAULT_BACKBONE: BackboneChoice = "r50-21k"


def recipe_for(
    *,
    phase: int | None = None,
    dataset: str | None = None,
    backbone: str | None = None,
    baseline: str | None = None,
    labels: str | None = None,
) -> str:
    """The released recipe for a shorthand selection (defaults: lvis-base, r50-21k, online).

    Examples: phase 1 + lvis-base + r50-21k -> ``DECOLA_PHASE1_Lbase_CLIP_R5021k_4x``;
    baseline boxsup + lvis + swin-b -> ``BoxSup-DeformDETR_L_CLIP_SwinB_4x``.
    """
    if dataset is not None and dataset != "toy" and dataset not in DATASET_TOKENS:
        raise ConfigError(
            f"--dataset must be one of lvis, lvis-base, toy (got '{dataset}'); it selects the "
            "recipe's training data: to run on a catalog set use --eval-dataset (eval) or "
            "--label-dataset (self-label)"
        )
    if (phase is None) == (baseline is None):
        raise ConfigError(
            "choose a recipe with --phase 1|2 or --baseline boxsup|detic (one of them)"
        )
    if phase is not None and phase not in (1, 2):
        raise ConfigError(f"--phase must be 1 or 2 (got {phase})")
    if labels is not None and phase != 2:
        raise ConfigError("--labels online|offline applies to --phase 2 only")
    dataset = dataset or DEFAULT_DATASET
    if dataset == "toy":
        return _toy_recipe(phase, baseline, backbone)
    candidates = {
        bb: _name(phase, baseline, DATASET_TOKENS[dataset], token, labels or "online")
        for bb, token in BACKBONE_TOKENS.items()
    }
    backbone = backbone or DEFAULT_BACKBONE
    if backbone not in candidates:
        raise ConfigError(
            f"--backbone must be one of {', '.join(BACKBONE_TOKENS)} (got '{backbone}')"
        )
    known = set(list_recipes())
    if candidates[backbone] in known:
        return candidates[backbone]
    available = [bb for bb, name in candidates.items() if name in known]
    what = f"phase {phase}" if phase is not None else f"the {baseline} baseline"
    raise ConfigError(
        f"no released recipe for {what} on {dataset} with backbone {backbone} "
        f"(available backbones: {', '.join(available) or 'none'})"
    )


def _name(phase: int | None, baseline: str | None, data: str, bb: str, labels: str) -> str:
    if phase == 1:
        return f"DECOLA_PHASE1_{data}_CLIP_{bb}_4x"
    if phase == 2:
        offline = "_OFFLINE" if labels == "offline" else ""
        return f"DECOLA_PHASE2_{data}I_CLIP_{bb}_4x{offline}_ft4x"
    if baseline == "boxsup":
        return f"BoxSup-DeformDETR_{data}_CLIP_{bb}_4x"
    if baseline == "detic":
        return f"BoxSup+ST-DeformDETR_{data}I_CLIP_{bb}_4x_ft4x"
    raise ConfigError(f"--baseline must be boxsup or detic (got '{baseline}')")


def _toy_recipe(phase: int | None, baseline: str | None, backbone: str | None) -> str:
    if backbone is not None:
        raise ConfigError("the toy recipes have a fixed small ResNet-18 backbone; omit --backbone")
    key = ("phase", phase) if phase is not None else ("baseline", baseline)
    if key not in TOY_RECIPES:
        raise ConfigError(f"no toy recipe for --baseline {baseline} (toy has: --baseline boxsup)")
    return TOY_RECIPES[key]
