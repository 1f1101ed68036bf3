"""The training loop: phase 1, phase 2 (online teacher or offline pseudo boxes) and baselines,
on one process or many (DDP), resumable from complete checkpoints.

Determinism: the data stream, the augmentation of every sample, the class/object-mode draw,
the federated class subsets and dropout are all functions of (seed, iteration), so a run resumed
from a checkpoint continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from decola_core.config.schema import Recipe
from decola_core.data.loader import TrainBatch, TrainData
from decola_core.engine import solver as solvers
from decola_core.engine.checkpointer import Checkpointer
from decola_core.engine.distributed import DistContext
from decola_core.engine.hooks import (
    Hook,
    MetricsWriter,
    OnLog,
    PeriodicCheckpointer,
    StepResult,
    Visualiser,
)
from decola_core.errors import DecolaError, Preempted
from decola_core.jobs import TrainOptions
from decola_core.modeling.checkpoint import load_weights
from decola_core.modeling.criterion import total_loss
from decola_core.modeling.interface import DetectionModel, TrainStep
from decola_core.modeling.pseudo_labels import Teacher

log = logging.getLogger(__name__)
MAX_CONSECUTIVE_SKIPS = 5


class PreemptionSignals:
    """While active, SIGTERM and SIGUSR1 (Slurm's ``--signal=USR1@90``) only ask the loop to
    stop after the current step; every rank then agrees (one all-reduce per step)."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame) -> None:
        self.signal_name = signal.Signals(number).name

    def requested(self, context: DistContext) -> bool:
        asked = self.signal_name is not None
        if context.world_size > 1:
            flag = torch.tensor([1.0 if asked else 0.0], device=context.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            asked = bool(flag.item())
            if asked and self.signal_name is None:
                self.signal_name = "a signal on another rank"
        return asked


class TrainingForward(nn.Module):
    """Wraps a detector so that its forward is the family's training step: this is what DDP
    wraps, so gradient synchronisation sees the real forward."""

    def __init__(self, model: DetectionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, step: TrainStep) -> dict[str, torch.Tensor]:
        return self.model.training_step(step)


class Trainer:
    """Trains the recipe's model; ``run()`` returns the path of ``model_final.pth``.

    The loop knows nothing of the model's family: the model's ``training_step`` returns its
    loss terms, ``needs_teacher`` says whether image-labelled data needs a teacher.
    """

    def __init__(
        self,
        recipe: Recipe,
        options: TrainOptions,
        context: DistContext,
        build: Callable[[Recipe], DetectionModel],
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
        self.data = TrainData(
            recipe,
            options.data_root,
            rank=context.rank,
            world=context.world_size,
            seed=self.seed,
            with_polygons=self.model.trains_masks,
        )
        self.optimizer = solvers.build_optimizer(self.model, self.solver)
        self.scheduler = solvers.build_scheduler(self.optimizer, self.solver)
        self.scaler = solvers.grad_scaler(self.solver, context.device)
        self.teacher: Teacher | None = None
        self.checkpointer = Checkpointer(options.output_dir, options.keep_checkpoints)
        self.start_iter = 0
        self.bad_images = 0
        self.skipped_steps = 0
        self.wandb_id: str | None = None

    # ---- set-up ----------------------------------------------------------------------------

    def needs_teacher(self) -> bool:
        return self.model.needs_teacher(set(self.data.ann_types))

    def resume_or_initialise(self) -> None:
        """Resume from the newest checkpoint in the output dir, or load the initial weights."""
        found = self.checkpointer.load_latest() if self.options.resume else None
        if found is not None:
            latest, state = found
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
            log.info("resuming from %s at iteration %d", latest, self.start_iter)
        elif self.options.init_weights is not None:
            load_weights(
                self.model,
                self.options.init_weights,
                trusted=self.options.trust_weights,
                allow_embedding_mismatch=self.options.allow_embedding_mismatch,
            )
        if self.needs_teacher():
            if self.options.teacher_weights is None:
                raise DecolaError(
                    "phase 2 with online pseudo-labels needs phase-1 weights (--weights)"
                )
            # always rebuilt from the phase-1 weights, also on resume
            self.teacher = Teacher.from_weights(
                self.recipe,
                self.options.teacher_weights,
                data_root=self.options.data_root,
                trusted=self.options.trust_weights,
                allow_embedding_mismatch=self.options.allow_embedding_mismatch,
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

    def default_hooks(self, on_log: OnLog = None) -> list[Hook]:
        """Metrics, visualisations (``logging.wandb.vis_period``) and periodic checkpoints."""
        out = self.options.output_dir
        return [
            MetricsWriter(out / "metrics.jsonl", self.recipe.logging.period, on_log),
            Visualiser(out / "vis", self.recipe.logging.wandb.vis_period, on_log),
            PeriodicCheckpointer(self.period),
        ]

    # ---- loop --------------------------------------------------------------------------------

    def run(self, on_log: OnLog = None, hooks: list[Hook] | None = None) -> Path:
        self.resume_or_initialise()
        hooks = self.default_hooks(on_log) if hooks is None else hooks
        forward: nn.Module = TrainingForward(self.model)
        if self.context.world_size > 1:
            forward = nn.parallel.DistributedDataParallel(
                forward,
                device_ids=[self.context.device.index]
                if self.context.device.type == "cuda"
                else None,
                broadcast_buffers=False,
                find_unused_parameters=self.model.has_unused_parameters,
            )
        num_workers = self.options.num_workers
        batches = self.data.batches(
            self.recipe.data.num_workers if num_workers is None else num_workers
        )
        for hook in hooks:
            hook.before_train(self)
        consecutive_skips = 0
        with PreemptionSignals() as preemption:
            for it in range(self.start_iter, self.max_iter):
                consecutive_skips = self._iteration(forward, batches, hooks, it, consecutive_skips)
                if preemption.requested(self.context) and it + 1 < self.max_iter:
                    path = self.save(f"model_{it + 1:07d}.pth", it + 1)
                    log.warning(
                        "%s at iteration %d: checkpoint %s written; run the same command again "
                        "to resume from it",
                        preemption.signal_name,
                        it + 1,
                        path,
                    )
                    raise Preempted(
                        f"preempted at iteration {it + 1}; checkpoint {path} written, run the "
                        "same command again to resume"
                    )
        return self.save("model_final.pth", self.max_iter, pointer=False)

    def _iteration(
        self, forward: nn.Module, batches, hooks: list[Hook], it: int, consecutive_skips: int
    ) -> int:
        """One step (or a skipped one); returns the count of consecutive skipped steps."""
        batch = next(batches)
        self._count_bad(batch)
        torch.manual_seed(derived_seed(self.seed, it, self.context.rank))
        losses, image_ids = self._step_losses(forward, batch, it)
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
            return consecutive_skips
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        solvers.clip_gradients(self.model, self.solver)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._advance_schedule()
        result = StepResult(it + 1, batch, losses, total)
        for hook in hooks:
            hook.after_step(self, result)
        return 0

    def _advance_schedule(self) -> None:
        """One scheduler step per iteration, also for skipped steps (torch warns about the
        order after a skipped step; the schedule is per iteration on purpose)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def _step_losses(self, forward: nn.Module, batch: TrainBatch, it: int):
        device = self.context.device
        images = [s.image.to(device) for s in batch.samples]
        image_ids = [s.image_id for s in batch.samples]
        if not images:  # every image of the batch was unreadable
            zero = sum(p.sum() * 0.0 for p in self.model.parameters() if p.requires_grad)
            return {"loss_empty_batch": zero}, image_ids
        step = TrainStep(
            images=images,
            targets=[{k: v.to(device) for k, v in t.items()} for t in batch.targets()],
            image_labels=[s.image_labels.to(device) for s in batch.samples],
            weak=batch.ann_type == "image",
            generator=torch.Generator().manual_seed(
                derived_seed(self.seed, it, self.context.rank, 1)
            ),
            rng=np.random.default_rng([self.seed, it]),
            teacher=self.teacher,
            polygons=batch.polygons(),
        )
        with solvers.autocast(self.solver, device):
            losses = forward(step)
        return {k: v.float() for k, v in losses.items()}, image_ids

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

    def log_record(self, done: int, losses: dict, total: torch.Tensor, seconds: float) -> dict:
        """The metrics of iteration ``done``, averaged over ranks."""
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

    def save(self, name: str, iteration: int, pointer: bool = True) -> Path:
        """A complete checkpoint (every rank's data-planner state included), written by rank 0."""
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
                "embedding_provenance": getattr(self.model, "embedding_provenance", None),
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
