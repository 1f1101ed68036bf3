"""Things the training loop does after a step, each a small hook: write metrics, draw the
predictions of a batch, save periodic checkpoints (detectron2's hooks, reduced to what decola
needs). A hook sees the trainer and the finished step; it never changes the optimisation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from decola_core.data.loader import TrainBatch
from decola_core.engine.distributed import DistContext
from decola_core.modeling.interface import DetectionModel
from decola_core.structures.boxes import box_cxcywh_to_xyxy
from decola_core.structures.masks import polygon_masks
from decola_core.utils.draw import draw_instances
from decola_core.utils.io import atomic_open, atomic_write_text

OnLog = Callable[[dict], None] | None


class Trainer(Protocol):
    """What hooks may use of the trainer."""

    context: DistContext
    model: DetectionModel
    max_iter: int
    start_iter: int

    def log_record(self, done: int, losses: dict, total: torch.Tensor, seconds: float) -> dict: ...

    def save(self, name: str, iteration: int, pointer: bool = True) -> Path: ...


@dataclass
class StepResult:
    """What one finished iteration hands to the hooks."""

    done: int  # iterations finished (1-based)
    batch: TrainBatch
    losses: dict[str, torch.Tensor]
    total: torch.Tensor


class Hook:
    def before_train(self, trainer: Trainer) -> None:
        """Called once the run has resumed or initialised, before the first step."""

    def after_step(self, trainer: Trainer, step: StepResult) -> None:
        """Called after every optimiser step (skipped steps excluded)."""


class MetricsWriter(Hook):
    """Every ``logging.period`` iterations (and the first and last): the averaged losses, LR,
    counters and images/s as one line of ``metrics.jsonl`` and to ``on_log``."""

    def __init__(self, path: Path, period: int, on_log: OnLog = None) -> None:
        self.path, self.period, self.on_log = path, period, on_log
        self.last_time = time.perf_counter()
        self.images = 0

    def before_train(self, trainer: Trainer) -> None:
        """Cut the file back to the iterations the run (re)starts from: rows a killed run wrote
        after its last checkpoint are redone by this run, and must not appear twice."""
        self.last_time = time.perf_counter()
        self.images = 0
        if trainer.context.is_main and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and _iteration_of(line) <= trainer.start_iter
            ]
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def after_step(self, trainer: Trainer, step: StepResult) -> None:
        self.images += len(step.batch.samples) * trainer.context.world_size
        done = step.done
        if not (
            done % self.period == 0 or done == trainer.max_iter or done == trainer.start_iter + 1
        ):
            return
        now = time.perf_counter()
        record = trainer.log_record(done, step.losses, step.total, now - self.last_time)
        record["images_per_s"] = self.images / max(now - self.last_time, 1e-9)
        self.last_time, self.images = now, 0
        if trainer.context.is_main:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.on_log is not None:
                self.on_log(record)


def _iteration_of(line: str) -> int:
    try:
        return int(json.loads(line)["iter"])
    except (ValueError, KeyError, TypeError):  # a line cut by a kill: drop it
        return 1 << 62


class Visualiser(Hook):
    """Every ``period`` iterations: predictions (score > 0.1) and targets of the batch's first
    image, with their masks where the model or the data has them, as PNGs in ``<output>/vis``
    (and to W&B through ``on_log``)."""

    def __init__(self, folder: Path, period: int, on_log: OnLog = None) -> None:
        self.folder, self.period, self.on_log = folder, period, on_log

    @torch.no_grad()
    def after_step(self, trainer: Trainer, step: StepResult) -> None:
        batch = step.batch
        if not self.period or step.done % self.period or not trainer.context.is_main:
            return
        if not batch.samples:
            return
        sample = batch.samples[0]
        h, w = sample.image.shape[1:]
        model = trainer.model
        was_training = model.training
        model.eval()
        det = model.detect(
            [sample.image.to(trainer.context.device)],
            [(h, w)],
            max_detections=20,
            score_threshold=0.1,
        )[0]
        model.train(was_training)
        gt = box_cxcywh_to_xyxy(sample.boxes) * torch.tensor([w, h, w, h])
        gt_masks = None if sample.polygons is None else polygon_masks(sample.polygons, h, w)
        pictures = {
            "predictions": draw_instances(
                sample.image,
                det.boxes.cpu(),
                [f"{int(c)} {s:.2f}" for c, s in zip(det.labels, det.scores, strict=True)],
                det.labels.tolist(),
                masks=None if det.masks is None else det.masks.cpu(),
                fade=0.3,
            ),
            "targets": draw_instances(
                sample.image,
                gt,
                [str(int(c)) for c in sample.labels],
                sample.labels.tolist(),
                masks=gt_masks,
                fade=0.3,
            ),
        }
        self.folder.mkdir(exist_ok=True)
        for kind, picture in pictures.items():
            name = f"iter_{step.done:07d}_{batch.ann_type}_{kind}.png"
            with atomic_open(self.folder / name, "wb") as handle:
                picture.save(handle, format="PNG")
        if self.on_log is not None:
            images = {f"{batch.ann_type}-{k}": p for k, p in pictures.items()}
            self.on_log({"iter": step.done, "images": images})


class PeriodicCheckpointer(Hook):
    """``model_<iter>.pth`` every ``period`` iterations (the final one is the trainer's)."""

    def __init__(self, period: int) -> None:
        self.period = period

    def after_step(self, trainer: Trainer, step: StepResult) -> None:
        if step.done % self.period == 0 and step.done < trainer.max_iter:
            trainer.save(f"model_{step.done:07d}.pth", step.done)
