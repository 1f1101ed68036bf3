"""Speed and peak memory of the full DECOLA phase-1 R50-21k model on this machine.

Each measurement runs in its own process so that its peak resident memory (ru_maxrss) is its
own. Timings are the second repetition after one warm-up, like the original's figures in
shared/reference/timing_full_r50_cpu.json, which this script prints ratios against.

    python benchmarks/bench_model.py [--threads 2] [--reference-dir ../shared/reference]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _common import measure_in_children

RECIPE = "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x"
SIZES = ((512, 512), (480, 512))  # the original's benchmark batch
PROMPTS = (1, 50, 300)


def _model(reference_dir: Path):
    import torch

    from decola_core.config import load_recipe
    from decola_core.modeling import build_model

    torch.manual_seed(0)
    return build_model(load_recipe(RECIPE), data_root=reference_dir)


def _batch(prompts):
    import torch

    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in SIZES]
    targets = []
    for _ in SIZES:
        labels = torch.tensor(prompts[:2] if len(prompts) > 1 else prompts)
        centers = torch.rand(len(labels), 2, generator=gen) * 0.5 + 0.25
        sizes = torch.rand(len(labels), 2, generator=gen) * 0.3 + 0.1
        targets.append({"labels": labels, "boxes": torch.cat([centers, sizes], 1)})
    return images, targets


def measure_train(reference_dir: Path) -> dict:
    import torch

    from decola_core.modeling.criterion import total_loss
    from decola_core.modeling.decola.criterion import DecolaCriterion

    model = _model(reference_dir).train()
    criterion = DecolaCriterion(fed_loss_weight=model.class_embed[-1].fed_loss_weight)
    images, targets = _batch(PROMPTS)
    prompts = torch.tensor(PROMPTS)
    result = {}
    for _ in range(2):  # warm-up, then the measured repetition
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = total_loss(criterion(model(images, prompts), targets))
        forward = time.perf_counter() - start
        loss.backward()
        result = {"train_forward_s": forward, "train_fwd_bwd_s": time.perf_counter() - start}
    return result


def measure_eval(reference_dir: Path, num_prompts: int) -> dict:
    import torch

    model = _model(reference_dir).eval()
    images, _ = _batch(PROMPTS)
    prompts = (
        torch.tensor(PROMPTS) if num_prompts == len(PROMPTS) else torch.arange(num_prompts) * 7
    )
    elapsed = 0.0
    with torch.no_grad():
        for _ in range(2):
            start = time.perf_counter()
            model(images, prompts)
            elapsed = time.perf_counter() - start
    return {"eval_forward_s": elapsed}


def measure_msda() -> dict:
    import torch

    from decola_core.modeling.msda import MSDeformAttn

    torch.manual_seed(0)
    shapes = [(64, 64), (32, 32), (16, 16), (8, 8)]  # 5440 tokens, as at 512 x 512
    tokens = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(256, 4, 8, 4)
    src = torch.randn(2, tokens, 256, requires_grad=True)
    ref = torch.rand(2, tokens, 4, 2)
    elapsed = 0.0
    for _ in range(2):
        start = time.perf_counter()
        attn(src, ref, src, shapes).sum().backward()
        elapsed = time.perf_counter() - start
    return {"msda_fwd_bwd_s": elapsed}


def measure(name: str, reference_dir: Path) -> dict:
    if name == "train":
        return measure_train(reference_dir)
    if name == "eval":
        return measure_eval(reference_dir, len(PROMPTS))
    if name == "eval_k50":
        return measure_eval(reference_dir, 50)
    return measure_msda()


#: decola before this CPU work (grid_sample everywhere, glibc returning freed blocks), measured
#: side by side with the original on 2026-12-01: train 1.15-1.19x, inference about 1.0x of it.
BEFORE = {"DECOLA_MSDA_BACKEND": "grid_sample", "DECOLA_MALLOC": "system"}
ROUNDS = 2


def main() -> None:
    names = ("msda", "eval", "eval_k50", "train")
    measured = measure_in_children(__doc__, __file__, names, measure, rounds=ROUNDS, before=BEFORE)
    if measured is None:
        return
    args, results, before = measured
    original = json.loads((args.reference_dir / "timing_full_r50_cpu.json").read_text())
    print(f"DECOLA {RECIPE}, CPU, {args.threads} threads, batch 2 ({SIZES[0]} + {SIZES[1]}), fp32")
    print(
        f"{ROUNDS} alternating rounds (before, now, before, now); 'before' = {BEFORE}; "
        "seconds are each round's, speed-ups the mean of the rounds'"
    )
    print(
        "vs original: against its recorded seconds (measured on another day); chained: "
        "now/before x the original's speed relative to 'before' when both ran side by side"
    )
    header = ("measurement", "now s", "before s", "now/before", "original s", "vs original")
    print(
        f"{header[0]:38s} {header[1]:>12s} {header[2]:>12s} {header[3]:>10s} {header[4]:>10s} "
        f"{header[5]:>11s} {'chained':>8s} {'peak MiB':>9s}"
    )
    side_by_side = original["decola_same_run"]
    rows = [
        ("train forward (+ loss), K=3", "train", "train_forward_s"),
        ("train forward + backward, K=3", "train", "train_fwd_bwd_s"),
        ("inference forward, K=3", "eval", "eval_forward_s"),
        ("inference forward, K=50", "eval_k50", "eval_forward_s"),
        ("MSDA fwd+bwd, encoder scale (S=5440)", "msda", "msda_fwd_bwd_s"),
    ]
    for label, name, key in rows:
        now = [r[name][key] for r in results]
        then = [r[name][key] for r in before]
        gain = sum(b / n for b, n in zip(then, now, strict=True)) / len(now)
        theirs = original.get(key) if name in ("train", "eval") else None
        vs = f"{theirs / (sum(now) / len(now)):10.2f}x" if theirs else f"{'-':>11s}"
        chained = f"{'-':>8s}"
        if theirs and key in side_by_side:
            before_then = sum(side_by_side[key]) / len(side_by_side[key])
            chained = f"{gain * theirs / before_then:7.2f}x"
        print(
            f"{label:38s} {' / '.join(f'{x:.2f}' for x in now):>12s} "
            f"{' / '.join(f'{x:.2f}' for x in then):>12s} {gain:9.2f}x "
            f"{theirs if theirs else '-':>10} {vs} {chained} "
            f"{results[-1][name]['peak_rss_mib']:9.0f}"
        )


if __name__ == "__main__":
    main()
