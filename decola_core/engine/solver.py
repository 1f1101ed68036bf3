"""The optimiser side of training: parameter groups with LR multipliers, the warmup + decay
schedule, gradient clipping and mixed precision, each as the recipe's ``solver`` describes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from decola_core.config.schema import SolverConfig


def param_groups(model: nn.Module, solver: SolverConfig) -> list[dict]:
    """AdamW groups by LR multiplier: x backbone_multiplier for backbone parameters and x
    custom_multiplier for names containing any custom name (the factors stack)."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        factor = 1.0
        if "backbone" in name:
            factor *= solver.backbone_multiplier
        if any(key in name for key in solver.custom_multiplier_names):
            factor *= solver.custom_multiplier
        groups.setdefault(factor, []).append(param)
    return [
        {"params": params, "lr": solver.base_lr * factor}
        for factor, params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, solver: SolverConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (with momentum) over :func:`param_groups`."""
    groups = param_groups(model, solver)
    if solver.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=solver.base_lr, weight_decay=solver.weight_decay)
    return torch.optim.SGD(
        groups, lr=solver.base_lr, momentum=solver.momentum, weight_decay=solver.weight_decay
    )


def lr_factor(solver: SolverConfig, max_iter: int) -> Callable[[int], float]:
    """detectron2's ``WarmupParamScheduler`` over multi-step or cosine decay: during warmup
    the factor goes linearly from ``warmup_factor`` x decay(0) to decay(warmup_iters) (or
    stays at the start value for ``constant``), then follows the decay."""

    def decay(it: float) -> float:
        if solver.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * it / max_iter))
        return solver.gamma ** sum(it >= s for s in solver.steps)

    def factor(it: int) -> float:
        if it >= solver.warmup_iters:
            return decay(it)
        start = solver.warmup_factor * decay(0)
        if solver.warmup_method == "constant":
            return start
        alpha = it / solver.warmup_iters
        return start * (1 - alpha) + decay(solver.warmup_iters) * alpha

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, solver: SolverConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """One step per iteration over the whole schedule (``max_iter``, even when training stops
    early at ``train_iter``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(solver, solver.max_iter))


def clip_gradients(model: nn.Module, solver: SolverConfig) -> None:
    """``solver.clip_gradients``: the norm of all gradients together (``full_model``/``norm``,
    of order ``norm_type``) or every gradient value (``value``) clipped to ``value``."""
    clip = solver.clip_gradients
    if not clip.enabled:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    if clip.type in ("full_model", "norm"):
        torch.nn.utils.clip_grad_norm_(params, clip.value, norm_type=clip.norm_type)
    else:
        torch.nn.utils.clip_grad_value_(params, clip.value)


def autocast(solver: SolverConfig, device: torch.device):
    """The autocast context of ``solver.amp`` (fp16 on CUDA only; bf16 anywhere; else off)."""
    amp, kind = solver.amp, device.type
    if amp in ("fp16", "bf16") and (kind == "cuda" or amp == "bf16"):
        return torch.autocast(kind, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
    return torch.autocast(kind, enabled=False)


def grad_scaler(solver: SolverConfig, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for the fp16 modes on CUDA (a no-op scaler elsewhere)."""
    fp16 = solver.amp in ("fp16", "backbone-fp16") and device.type == "cuda"
    return torch.amp.GradScaler(enabled=fp16)
