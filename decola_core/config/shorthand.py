"""Shorthand recipe selection: ``--phase/--dataset/--backbone/--baseline/--detector`` -> a
recipe name."""

from __future__ import annotations

from typing import Literal

from decola_core.config.loader import list_recipes
from decola_core.errors import ConfigError

Phase = Literal[1, 2]
DatasetChoice = Literal["lvis", "lvis-base", "toy"]
BackboneChoice = Literal["r50-21k", "r50-1k", "swin-b", "swin-l"]
BaselineChoice = Literal["boxsup", "detic"]
LabelsChoice = Literal["online", "offline"]
DetectorChoice = Literal["detr", "c2", "c2+detic"]

DATASET_TOKENS = {"lvis": "L", "lvis-base": "Lbase"}
BACKBONE_TOKENS = {"r50-21k": "R5021k", "r50-1k": "R501k", "swin-b": "SwinB", "swin-l": "SwinL"}
TOY_RECIPES = {
    ("phase", 1): "toy/DECOLA_PHASE1_Toy",
    ("phase", 2): "toy/DECOLA_PHASE2_Toy",
    ("baseline", "boxsup"): "toy/BoxSup-DeformDETR_Toy",
    ("baseline", "detic"): "toy/BoxSup+ST-DeformDETR_Toy",
}
TOY_C2_RECIPES = {
    ("baseline", "boxsup"): "toy/BoxSup-C2_Toy",
    ("baseline", "detic"): "toy/Detic-C2_Toy",
}
DETECTORS = ("detr", "c2", "c2+detic")
#: The CenterNet2 recipes' input size and batch by backbone (as in their names).
C2_SIZE_TOKENS = {"R5021k": "640b64", "SwinB": "896b32"}
DEFAULT_DATASET: DatasetChoice = "lvis-base"
DEFAULT_BACKBONE: BackboneChoice = "r50-21k"


def recipe_for(
    *,
    phase: int | None = None,
    dataset: str | None = None,
    backbone: str | None = None,
    baseline: str | None = None,
    labels: str | None = None,
    detector: str | None = None,
) -> str:
    """The released recipe for a shorthand selection (defaults: lvis-base, r50-21k, online,
    the Deformable-DETR detector).

    Examples: phase 1 + lvis-base + r50-21k -> ``DECOLA_PHASE1_Lbase_CLIP_R5021k_4x``;
    baseline boxsup + lvis + swin-b -> ``BoxSup-DeformDETR_L_CLIP_SwinB_4x``;
    phase 2 + detector c2+detic -> ``DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x+Detic``.
    """
    if detector is not None and detector not in DETECTORS:
        raise ConfigError(f"--detector must be one of {', '.join(DETECTORS)} (got '{detector}')")
    c2 = detector in ("c2", "c2+detic")
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
    if c2 and phase == 1:
        raise ConfigError(
            "phase 1 is a Deformable-DETR model; CenterNet2 (--detector c2) trains in phase 2 "
            "on phase 1's pseudo-labels, or as --baseline boxsup|detic"
        )
    if c2 and labels == "online":
        raise ConfigError("CenterNet2 recipes train on offline pseudo-labels only (omit --labels)")
    if detector == "c2+detic" and phase != 2:
        raise ConfigError("--detector c2+detic applies to --phase 2 (DECOLA C2 + Detic loss)")
    dataset = dataset or DEFAULT_DATASET
    if dataset == "toy":
        return _toy_recipe(phase, baseline, backbone, c2)
    known = set(list_recipes())
    if c2:
        candidates = {
            bb: _c2_name(phase, baseline, DATASET_TOKENS[dataset], token, detector, known)
            for bb, token in BACKBONE_TOKENS.items()
            if token in C2_SIZE_TOKENS
        }
    else:
        candidates = {
            bb: _name(phase, baseline, DATASET_TOKENS[dataset], token, labels or "online")
            for bb, token in BACKBONE_TOKENS.items()
        }
    backbone = backbone or DEFAULT_BACKBONE
    if backbone not in BACKBONE_TOKENS:
        raise ConfigError(
            f"--backbone must be one of {', '.join(BACKBONE_TOKENS)} (got '{backbone}')"
        )
    if candidates.get(backbone) in known:
        return candidates[backbone]
    available = [bb for bb, name in candidates.items() if name in known]
    what = f"phase {phase}" if phase is not None else f"the {baseline} baseline"
    if c2:
        what += " with CenterNet2"
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


def _c2_name(
    phase: int | None, baseline: str | None, data: str, bb: str, detector: str, known: set[str]
) -> str:
    size = C2_SIZE_TOKENS[bb]
    if phase == 2:
        detic = "+Detic" if detector == "c2+detic" else ""
        return f"DECOLA_C2_{data}I_CLIP_{bb}_{size}_ft4x{detic}"
    if baseline == "boxsup":
        return f"BoxSup-C2_{data}_CLIP_{bb}_{size}_4x"
    if baseline == "detic":  # a DETR recipe has one of these names: the C2 one is under c2/
        name = f"Detic_{data}I_CLIP_{bb}_{size}_4x_ft4x_max-size"
        return f"c2/{name}" if f"c2/{name}" in known else name
    raise ConfigError(f"--baseline must be boxsup or detic (got '{baseline}')")


def _toy_recipe(
    phase: int | None, baseline: str | None, backbone: str | None, c2: bool = False
) -> str:
    if backbone is not None:
        raise ConfigError("the toy recipes have a fixed small ResNet-18 backbone; omit --backbone")
    key = ("phase", phase) if phase is not None else ("baseline", baseline)
    if c2:
        if key not in TOY_C2_RECIPES:
            raise ConfigError(
                "the toy CenterNet2 recipes are --baseline boxsup|detic --detector c2"
            )
        return TOY_C2_RECIPES[key]
    if key not in TOY_RECIPES:
        raise ConfigError(f"no toy recipe for --baseline {baseline} (toy has: --baseline boxsup)")
    return TOY_RECIPES[key]
