"""Speed and peak memory of the full R50 CenterNet2 (C2) model on this machine.

The batch of the original's figures (shared/reference/c2/timing_c2_full_r50_cpu.json): two
random images of 640x640 and 608x640, 3 + 2 ground-truth boxes with polygon masks, 'box'
batch, random init, fp32. Each measurement runs in its own process (its own peak resident
memory); timings are the second repetition after one warm-up, like the original's. The
original's file has no memory figure, so the same run also measures a baseline with
torchvision's RoIAlign (``DECOLA_ROI_ALIGN=torchvision``) for time and peak memory.

    python benchmarks/bench_c2.py [--threads 2] [--reference-dir ../shared/reference]
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from _common import measure_in_children

RECIPE = "DECOLA_C2_LbaseI_CLIP_R5021k_640b64_ft4x+Detic"
SIZES = ((640, 640), (608, 640))
BOXES = (3, 2)


def _model(reference_dir: Path):
    import torch

    from decola_core.config import load_recipe
    from decola_core.modeling import build_model

    torch.manual_seed(0)
    return build_model(load_recipe(RECIPE), data_root=reference_dir)


def _batch():
    import numpy as np
    import torch

    from decola_core.modeling.centernet2.roi_heads import GroundTruth

    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in SIZES]
    targets = []
    for (h, w), n in zip(SIZES, BOXES, strict=True):
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([w / 2, h / 2])
        wh = torch.rand(n, 2, generator=gen) * torch.tensor([w / 2, h / 2]) + 16
        boxes = torch.cat([xy, xy + wh], 1)
        polygons = []
        for x0, y0, x1, y1 in boxes.tolist():  # the inscribed ellipse, 16 points
            angles = np.arange(16) * 2 * math.pi / 16
            cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            ring = np.stack([cx + a * np.cos(angles), cy + b * np.sin(angles)], 1).reshape(-1)
            polygons.append([ring])
        targets.append(GroundTruth(boxes, torch.randint(0, 1203, (n,), generator=gen), polygons))
    return images, targets


def measure_train(reference_dir: Path) -> dict:
    """Forward, backward, and the whole step with the recipe's clipping and AdamW update."""
    from decola_core.config import load_recipe
    from decola_core.engine import solver as solvers

    model = _model(reference_dir).train()
    solver = load_recipe(RECIPE).solver
    optimizer = solvers.build_optimizer(model, solver)
    images, targets = _batch()
    result = {}
    for _ in range(2):  # warm-up, then the measured repetition
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        losses = model.forward_train(images, targets, ann_type="box")
        forward = time.perf_counter() - start
        sum(losses.values()).backward()
        total = time.perf_counter() - start
        solvers.clip_gradients(model, solver)
        optimizer.step()
        step = time.perf_counter() - start
        result = {
            "train_forward_s": forward,
            "backward_s": total - forward,
            "train_fwd_bwd_s": total,
            "train_step_s": step,
        }
    return result


def measure_eval(reference_dir: Path) -> dict:
    import torch

    model = _model(reference_dir).eval()
    images, _ = _batch()
    elapsed, count = 0.0, []
    with torch.no_grad():
        for _ in range(2):
            start = time.perf_counter()
            dets = model.detect(images, list(SIZES))
            elapsed = time.perf_counter() - start
            count = [len(d) for d in dets]
    return {"inference_forward_s": elapsed, "n_det": count}


def measure(name: str, reference_dir: Path) -> dict:
    """``train`` / ``eval``, with an optional ``_tv`` suffix (run under the baseline env)."""
    if name.startswith("train"):
        return measure_train(reference_dir)
    return measure_eval(reference_dir)


def main() -> None:
    baseline = {"DECOLA_ROI_ALIGN": "torchvision"}
    measured = measure_in_children(
        __doc__, __file__, ("eval", "train", "eval_tv", "train_tv"), measure,
        envs={"eval_tv": baseline, "train_tv": baseline},
    )  # fmt: skip
    if measured is None:
        return
    args, results = measured
    timing = args.reference_dir / "c2" / "timing_c2_full_r50_cpu.json"
    original = json.loads(timing.read_text())
    print(f"CenterNet2 {RECIPE}, CPU, {args.threads} threads, batch 2 {SIZES}, fp32")
    print(f"original: {timing} (its second repetition; the file's two runs differ by ~15%)")
    print("baseline: this run with torchvision's RoIAlign (DECOLA_ROI_ALIGN=torchvision)")
    header = ("measurement", "decola s", "original s", "x orig", "base s", "x base", "MiB",
              "base MiB")  # fmt: skip
    print(f"{header[0]:28s}" + "".join(f"{h:>11s}" for h in header[1:]))
    for label, key, run in (
        ("inference (masks pasted)", "inference_forward_s", "eval"),
        ("train forward (+ losses)", "train_forward_s", "train"),
        ("train backward", "backward_s", "train"),
        ("train forward + backward", "train_fwd_bwd_s", "train"),
    ):
        mine, theirs, base = results[run][key], original[key][-1], results[run + "_tv"][key]
        peak, base_peak = results[run]["peak_rss_mib"], results[run + "_tv"]["peak_rss_mib"]
        print(
            f"{label:28s}{mine:11.2f}{theirs:11.2f}{theirs / mine:10.2f}x{base:11.2f}"
            f"{base / mine:10.2f}x{peak:11.0f}{base_peak:11.0f}"
        )
    step, base_step = results["train"]["train_step_s"], results["train_tv"]["train_step_s"]
    print(
        f"{'train step (+ clip, AdamW)':28s}{step:11.2f}{'-':>11s}{'-':>11s}{base_step:11.2f}"
        f"{base_step / step:10.2f}x"
    )
    print(f"training throughput: {len(SIZES) / step:.3f} images/s ({len(SIZES)} images per step)")
    print(f"detections per image: {results['eval']['n_det']} (original {original['n_det']})")


if __name__ == "__main__":
    main()
