"""The training loop: phase 1, phase 2 (online teacher or offline pseudo boxes) and baselines,
on one process or many (DDP), resumable from complete checkpoints.

Determinism: the data stream, the augmentation of every sample, the class/object-mode draw,
the federated class subsets and dropout are all functions of (seed, iteration), so a run resumed
from a checkpoint continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from decola_core.config.schema import Recipe
from decola_core.data.loader import TrainBatch, TrainData
from decola_core.engine.checkpointer import Checkpointer
from decola_core.engine.distributed import DistContext
from decola_core.errors import DecolaError
from decola_core.modeling.criterion import BaselineCriterion, DecolaCriterion, total_loss
from decola_core.modeling.detector import DecolaDETR
from decola_core.modeling.prompts import training_prompts
from decola_core.modeling.pseudo_labels import Teacher

log = logging.getLogger(__name__)
MAX_CONSECUTIVE_SKIPS = 5


@dataclass
class TrainOptions:
    output_dir: Path
    data_root: Path
    max_iter: int | None = None
    checkpoint_period: int | None = None
    resume: bool = True
    num_workers: int = 0
    max_bad_images: int = 0
    keep_checkpoints: int = 3
    teacher_weights: Path | None = None
    init_weights: Path | None = None
    wandb: bool = False


def param_groups(model: nn.Module, solver) -> list[dict]:
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


def lr_factor(solver, max_iter: int) -> Callable[[int], float]:
    """Warmup (linear or constant from warmup_factor) times multi-step or cosine decay."""

    def factor(it: int) -> float:
        if solver.lr_scheduler == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * it / max_iter))
        else:
            decay = solver.gamma ** sum(it >= s for s in solver.steps)
        if it < solver.warmup_iters:
            if solver.warmup_method == "constant":
                return decay * solver.warmup_factor
            alpha = it / solver.warmup_iters
            return decay * (solver.warmup_factor * (1 - alpha) + alpha)
        return decay

    return factor


class Trainer:
    """Trains the recipe's model; ``run()`` returns the path of ``model_final.pth``."""

    def __init__(
        self,
        recipe: Recipe,
        options: TrainOptions,
        context: DistContext,
        build: Callable[[Recipe], nn.Module],
    ) -> None:
        self.recipe, self.options, self.context = recipe, options, context
        self.solver = recipe.solver
        self.max_iter = options.max_iter or self.solver.train_iter or self.solver.max_iter
        self.period = options.checkpoint_period or self.solver.checkpoint_period
        self.seed = (
            recipe.seed if recipe.seed >= 0 else int(np.random.SeedSequence().entropy % 2**31)
        )
        torch.manual_seed(derived_seed(self.seed))  # the same initial weights on every rank and run
        self.model = build(recipe).to(context.device)
        self.model.backbone_fp16 = (
            self.solver.amp == "backbone-fp16" and context.device.type == "cuda"
        )
        self.class_mode_model = isinstance(self.model, DecolaDETR)
        self.data = TrainData(
            recipe, options.data_root, rank=context.rank, world=context.world_size, seed=self.seed
        )
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(self.solver, self.solver.max_iter)
        )
        self.scaler = torch.amp.GradScaler(
            enabled=self.solver.amp in ("fp16", "backbone-fp16") and context.device.type == "cuda"
        )
        self.criterion = self._criterion()
        self.teacher: Teacher | None = None
        self.checkpointer = Checkpointer(options.output_dir, options.keep_checkpoints)
        self.start_iter = 0
        self.bad_images = 0
        self.skipped_steps = 0
        self.wandb_id: str | None = None

    # ---- set-up ----------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        groups = param_groups(self.model, self.solver)
        if self.solver.optimizer == "adamw":
            return torch.optim.AdamW(
                groups, lr=self.solver.base_lr, weight_decay=self.solver.weight_decay
            )
        return torch.optim.SGD(
            groups,
            lr=self.solver.base_lr,
            momentum=self.solver.momentum,
            weight_decay=self.solver.weight_decay,
        )

    def _criterion(self):
        loss, decola = self.recipe.model.loss, self.recipe.model.decola
        weights = dict(
            class_weight=loss.class_weight,
            bbox_weight=loss.bbox_l1_weight,
            giou_weight=loss.giou_weight,
            use_fed_loss=loss.use_fed_loss,
            fed_loss_num_classes=loss.fed_loss_num_classes,
        )
        if self.class_mode_model:
            return DecolaCriterion(
                **weights,
                enc_loss_per_prompt_topk=decola.enc_loss_per_prompt_topk,
                loss_only_within_image=decola.apply_loss_only_within_image,
                no_box_loss_for_pseudo_labels=decola.no_box_loss_for_pseudo_labels,
                fed_loss_weight=self.model.class_embed[-1].fed_loss_weight,
            )
        return BaselineCriterion(
            **weights, weak_weight=loss.weak_weight, fed_loss_weight=self.model.fed_loss_weight
        )

    def needs_teacher(self) -> bool:
        return (
            self.class_mode_model
            and self.recipe.model.decola.use_pseudo_labeling_for_weak_loss
            and "image" in self.data.ann_types
        )

    def resume_or_initialise(self) -> None:
        """Resume from the newest checkpoint in the output dir, or load the initial weights."""
        from decola_core.modeling.checkpoint import load_weights

        latest = self.checkpointer.latest() if self.options.resume else None
        if latest is not None:
            state = Checkpointer.load(latest)
            self._check_same_recipe(state.get("recipe", {}), latest)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.data.planner.load_state(state["planner"][self.context.rank])
            self.start_iter = int(state["iteration"])
            self.seed = int(state["seed"])
            self.data.seed = self.seed
            self.data.planner.stream.seed = self.seed
            self.bad_images = int(state.get("bad_images", 0))
            self.wandb_id = state.get("wandb_id")
            log.info("resumed from %s at iteration %d", latest, self.start_iter)
        elif self.options.init_weights is not None:
            report = load_weights(self.model, self.options.init_weights)
            log.info("initial weights: %s", report.summary())
        if self.needs_teacher():
            if self.options.teacher_weights is None:
                raise DecolaError(
                    "phase 2 with online pseudo-labels needs phase-1 weights (--weights)"
                )
            # always rebuilt from the phase-1 weights, also on resume
            self.teacher = Teacher.from_weights(
                self.recipe, self.options.teacher_weights, data_root=self.options.data_root
            )
            self.teacher.model.to(self.context.device)

    def _check_same_recipe(self, saved: dict, path: Path) -> None:
        current = _comparable(self.recipe.model_dump(mode="json"))
        saved = _comparable(saved)
        if saved and saved != current:
            keys = sorted(_diff_keys(saved, current))[:5]
            raise DecolaError(
                f"{path} was written by a different recipe (differences: {', '.join(keys)}); "
                "use --no-resume or another --output-dir"
            )

    # ---- loop --------------------------------------------------------------------------------

    def run(self, on_log: Callable[[dict], None] | None = None) -> Path:
        self.resume_or_initialise()
        model = self.model
        if self.context.world_size > 1:
            model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.context.device.index]
                if self.context.device.type == "cuda"
                else None,
                broadcast_buffers=False,
                find_unused_parameters=False,
            )
        metrics_path = self.options.output_dir / "metrics.jsonl"
        batches = self.data.batches(self.options.num_workers)
        consecutive_skips = 0
        last_time = time.perf_counter()
        images_since_log = 0
        for it in range(self.start_iter, self.max_iter):
            batch = next(batches)
            self._count_bad(batch)
            images_since_log += len(batch.samples) * self.context.world_size
            torch.manual_seed(derived_seed(self.seed, it, self.context.rank))
            losses, image_ids = self._step_losses(model, batch, it)
            total = total_loss(losses)
            if not self._all_finite(total):
                consecutive_skips += 1
                self.skipped_steps += 1
                self.optimizer.zero_grad(set_to_none=True)
                log.warning(
                    "non-finite loss at iteration %d (images %s): step skipped", it + 1, image_ids
                )
                if consecutive_skips > MAX_CONSECUTIVE_SKIPS:
                    raise DecolaError(
                        f"the loss was not finite for {consecutive_skips} consecutive "
                        f"steps (last images: {image_ids}); stopping"
                    )
                self._advance_schedule()
                continue
            consecutive_skips = 0
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._advance_schedule()
            done = it + 1
            if (
                done % self.recipe.logging.period == 0
                or done == self.max_iter
                or done == self.start_iter + 1
            ):
                now = time.perf_counter()
                record = self._log_record(done, losses, total, now - last_time)
                record["images_per_s"] = images_since_log / max(now - last_time, 1e-9)
                last_time, images_since_log = now, 0
                if self.context.is_main:
                    with open(metrics_path, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
                    if on_log is not None:
                        on_log(record)
            vis_period = self.recipe.logging.wandb.vis_period
            if vis_period and done % vis_period == 0 and self.context.is_main:
                self._visualise(batch, done, on_log)
            if done % self.period == 0 and done < self.max_iter:
                self._save(f"model_{done:07d}.pth", done)
        final = self._save("model_final.pth", self.max_iter, pointer=False)
        return final

    @torch.no_grad()
    def _visualise(self, batch: TrainBatch, done: int, on_log) -> None:
        """Predictions (score > 0.1) and targets of the batch's first image, as PNGs in
        ``<output>/vis`` (and to W&B through the log callback)."""
        from decola_core.modeling.postprocess import postprocess
        from decola_core.utils.draw import draw_boxes
        from decola_core.utils.io import atomic_open

        if not batch.samples:
            return
        sample = batch.samples[0]
        h, w = sample.image.shape[1:]
        was_training = self.model.training
        self.model.eval()
        out = self.model([sample.image.to(self.context.device)])
        self.model.train(was_training)
        det = postprocess(
            out.pred_logits,
            out.pred_boxes,
            [(h, w)],
            prompt_inds=out.prompt_inds,
            max_detections=20,
            score_threshold=0.1,
        )[0]
        from decola_core.structures.boxes import box_cxcywh_to_xyxy

        gt = box_cxcywh_to_xyxy(sample.boxes) * torch.tensor([w, h, w, h])
        pictures = {
            "predictions": draw_boxes(
                sample.image,
                det.boxes.cpu(),
                [f"{int(c)} {s:.2f}" for c, s in zip(det.labels, det.scores, strict=True)],
                det.labels.tolist(),
                fade=0.3,
            ),
            "targets": draw_boxes(
                sample.image,
                gt,
                [str(int(c)) for c in sample.labels],
                sample.labels.tolist(),
                fade=0.3,
            ),
        }
        folder = self.options.output_dir / "vis"
        folder.mkdir(exist_ok=True)
        for kind, picture in pictures.items():
            with atomic_open(
                folder / f"iter_{done:07d}_{batch.ann_type}_{kind}.png", "wb"
            ) as handle:
                picture.save(handle, format="PNG")
        if on_log is not None:
            on_log(
                {"iter": done, "images": {f"{batch.ann_type}-{k}": p for k, p in pictures.items()}}
            )

    def _advance_schedule(self) -> None:
        """One scheduler step per iteration, also for skipped steps (torch warns about the
        order after a skipped step; the schedule is per iteration on purpose)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def _step_losses(self, model, batch: TrainBatch, it: int):
        device = self.context.device
        images = [s.image.to(device) for s in batch.samples]
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch.targets()]
        image_labels = [s.image_labels.to(device) for s in batch.samples]
        image_ids = [s.image_id for s in batch.samples]
        weak = batch.ann_type == "image"
        generator = torch.Generator().manual_seed(derived_seed(self.seed, it, self.context.rank, 1))
        if not images:  # every image of the batch was unreadable
            zero = sum(p.sum() * 0.0 for p in self.model.parameters() if p.requires_grad)
            return {"loss_empty_batch": zero}, image_ids
        if weak and self.teacher is not None:
            pseudo = self.teacher(images, image_labels)
            targets = [{"labels": p.labels, "boxes": p.boxes} for p in pseudo]
        with self._autocast():
            if self.class_mode_model:
                object_mode = (
                    np.random.default_rng([self.seed, it]).random()
                    < self.recipe.model.decola.prob_a_object
                )
                prompts = (
                    None
                    if object_mode
                    else training_prompts(
                        [t["labels"] for t in targets],
                        self.model.num_classes,
                        image_labels=image_labels if weak else None,
                        generator=generator,
                    ).to(device)
                )
                out = model(images, prompts)
                losses = self.criterion(out, targets, weak=weak)
            else:
                out = model(images)
                losses = self.criterion(
                    out, targets, image_labels=image_labels if weak else None, generator=generator
                )
        return {k: v.float() for k, v in losses.items()}, image_ids

    def _autocast(self):
        amp = self.solver.amp
        device = self.context.device.type
        if amp in ("fp16", "bf16") and (device == "cuda" or amp == "bf16"):
            return torch.autocast(device, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
        return torch.autocast(device, enabled=False)

    def _clip(self) -> None:
        clip = self.solver.clip_gradients
        if not clip.enabled:
            return
        params = [p for p in self.model.parameters() if p.grad is not None]
        if clip.type == "full_model" or clip.type == "norm":
            torch.nn.utils.clip_grad_norm_(params, clip.value, norm_type=2.0)
        else:
            torch.nn.utils.clip_grad_value_(params, clip.value)

    def _all_finite(self, total: torch.Tensor) -> bool:
        flag = torch.tensor([0.0 if torch.isfinite(total) else 1.0], device=self.context.device)
        if self.context.world_size > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() == 0.0

    def _count_bad(self, batch: TrainBatch) -> None:
        self.bad_images += len(batch.bad_images)
        if self.bad_images > self.options.max_bad_images:
            raise DecolaError(
                f"{self.bad_images} unreadable training images (e.g. {batch.bad_images[0]}); "
                "allow more with --max-bad-images or fix the data"
            )

    def _log_record(self, done: int, losses: dict, total: torch.Tensor, seconds: float) -> dict:
        values = torch.stack([total.detach()] + [v.detach() for v in losses.values()])
        if self.context.world_size > 1:
            dist.all_reduce(values)
            values /= self.context.world_size
        names = ["total_loss", *losses]
        record = {"iter": done, **{n: float(v) for n, v in zip(names, values, strict=True)}}
        record["lr"] = self.optimizer.param_groups[-1]["lr"]
        record["skipped_steps"] = self.skipped_steps
        record["bad_images"] = self.bad_images
        record["seconds"] = seconds
        return record

    def _save(self, name: str, iteration: int, pointer: bool = True) -> Path:
        planner_states = [self.data.planner.state()]
        if self.context.world_size > 1:
            gathered: list = [None] * self.context.world_size
            dist.all_gather_object(gathered, planner_states[0])
            planner_states = gathered
        path = self.options.output_dir / name
        if self.context.is_main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "iteration": iteration,
                "planner": planner_states,
                "seed": self.seed,
                "rng": {"torch": torch.get_rng_state()},
                "recipe": self.recipe.model_dump(mode="json"),
                "bad_images": self.bad_images,
                "wandb_id": self.wandb_id,
            }
            path = self.checkpointer.save(name, state, pointer=pointer)
        if self.context.world_size > 1:
            dist.barrier()
        return path


def derived_seed(*values: int) -> int:
    """A seed that is a fixed function of the given integers (not of the process)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


def _comparable(recipe: dict) -> dict:
    recipe = json.loads(json.dumps(recipe))
    recipe.pop("logging", None)
    recipe.pop("output_dir", None)
    recipe.get("solver", {}).pop("checkpoint_period", None)
    return recipe


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = []
        for k in set(a) | set(b):
            keys += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return keys
    return [] if a == b else [prefix.rstrip(".")]
