"""GPU speed and memory of the full DECOLA phase-1 model: MSDA backend x precision x compile.

One run prints one table per recipe (R50-21k, and Swin-B if it fits): train images/s and peak
memory, inference images/s at K = 3 and K = 50 prompts, for {pytorch, triton} x {fp32, bf16} x
{eager, compile}, with ratios against pytorch/fp32/eager measured in the same run; then the
deformable-attention core alone (forward + backward at encoder and decoder shapes) and
self-labelling throughput (one image per pass vs batches of one shape bucket).

    python benchmarks/bench_gpu.py                       # on a CUDA machine
    python benchmarks/bench_gpu.py --recipes r50 --iters 5 --json gpu.json
    python benchmarks/bench_gpu.py --smoke               # the toy model on CPU: checks the script

Class embeddings and category statistics come from --data-root when its metadata files exist
(e.g. ../shared/reference), else random ones of the right shape are written to a temporary
folder: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from decola_core.config import load_recipe
from decola_core.config.schema import Recipe
from decola_core.data.toy import ensure_toy_data
from decola_core.modeling import build_model
from decola_core.modeling.criterion import total_loss
from decola_core.modeling.ops.ms_deform_attn import BACKEND_ENV, ms_deform_attn
from decola_core.modeling.predictor import resize_shortest_edge
from decola_core.modeling.resources import resolve_path
from decola_core.pseudo.buckets import pseudo_label_in_buckets

RECIPES = {
    "r50": "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x",
    "swin-b": "DECOLA_PHASE1_L_CLIP_SwinB_4x",
    "toy": "toy/DECOLA_PHASE1_Toy",
}
#: Two LVIS-like images per GPU: short side 800, long side at most 1333.
LVIS_SIZES = ((800, 1199), (800, 1066))
SMOKE_SIZES = ((96, 128), (96, 112))
SELF_LABEL_MIN_SIZES = (240, 280, 320, 360, 400)


@dataclass(frozen=True)
class Variant:
    backend: str
    dtype: str
    compiled: bool

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.dtype}/{'compile' if self.compiled else 'eager'}"


def variants(device: torch.device, with_compile: bool) -> list[Variant]:
    triton = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    backends = ["pytorch", "triton"] if triton else ["pytorch"]
    compiles = [False, True] if with_compile else [False]
    return [Variant(b, d, c) for b in backends for d in ("fp32", "bf16") for c in compiles]


def ensure_metadata(recipe: Recipe, data_root: Path) -> Path:
    """``data_root`` if it holds the recipe's embedding files, else a folder of random ones."""
    c = recipe.model.classifier
    files = (c.embeddings, c.object_embedding, c.category_info)
    if all(resolve_path(f, data_root).is_file() for f in files):
        return data_root
    root = Path(tempfile.mkdtemp(prefix="decola-bench-"))
    ensure_toy_data(recipe, root)  # a toy recipe's files are generated, not random
    if all(resolve_path(f, root).is_file() for f in files):
        return root
    rng = np.random.default_rng(0)
    for path, rows in ((c.embeddings, c.num_classes), (c.object_embedding, 1)):
        target = resolve_path(path, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, rng.normal(size=(rows, c.embed_dim)).astype(np.float32))
    target = resolve_path(c.category_info, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": i + 1, "image_count": int(rng.integers(1, 500))} for i in range(c.num_classes)
    ]
    target.write_text(json.dumps(categories))
    return root


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    return (
        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    )


def batch(sizes, device: torch.device, num_classes: int):
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8).to(device)
        for h, w in sizes
    ]
    targets = []
    for _ in sizes:
        labels = torch.randint(0, min(num_classes, 3), (4,), generator=gen)
        boxes = torch.cat(
            [
                torch.rand(4, 2, generator=gen) * 0.5 + 0.25,
                torch.rand(4, 2, generator=gen) * 0.3 + 0.1,
            ],
            1,
        )
        targets.append({"labels": labels.to(device), "boxes": boxes.to(device)})
    return images, targets


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (where compilation happens)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def measure_variant(model, variant: Variant, device, sizes, args) -> dict:
    os.environ[BACKEND_ENV] = variant.backend
    torch._dynamo.reset()
    model.compile_network = variant.compiled
    images, targets = batch(sizes, device, model.num_classes)
    prompts = torch.tensor([1, 50, 300], device=device) % model.num_classes
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    model.train()

    def train_step() -> None:
        with autocast(device, variant.dtype):
            loss = total_loss(model.criterion(model(images, prompts), targets))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak(device)
    train_s = timed(train_step, device, args.warmup, args.iters)
    result = {"train_img_s": len(images) / train_s, "train_peak_mib": peak_mib(device)}
    model.eval()
    for k in (3, 50):
        k_prompts = (torch.arange(k, device=device) * 7) % model.num_classes

        @torch.no_grad()
        def infer(k_prompts=k_prompts) -> None:
            with autocast(device, variant.dtype):
                model(images, k_prompts)

        reset_peak(device)
        result[f"infer_k{k}_img_s"] = len(images) / timed(infer, device, args.warmup, args.iters)
        result[f"infer_k{k}_peak_mib"] = peak_mib(device)
    return result


def msda_shapes(sizes) -> dict[str, tuple[list[tuple[int, int]], int]]:
    """Level shapes (strides 8-64) of the padded batch, and the query count of each use."""
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    shapes = [(-(-h // s), -(-w // s)) for s in (8, 16, 32, 64)]
    return {"encoder": (shapes, sum(a * b for a, b in shapes)), "decoder": (shapes, 900)}


def measure_msda(device, sizes, args) -> dict:
    results = {}
    for where, (shapes, queries) in msda_shapes(sizes).items():
        tokens = sum(a * b for a, b in shapes)
        gen = torch.Generator().manual_seed(0)
        value = torch.randn(2, tokens, 8, 32, generator=gen).to(device)
        locations = (torch.rand(2, queries, 8, 4, 4, 2, generator=gen) * 1.1 - 0.05).to(device)
        weights = torch.rand(2, queries, 8, 4, 4, generator=gen).softmax(-1).to(device)
        for backend, dtype in [(b, d) for b in ("pytorch", "triton") for d in ("fp32", "bf16")]:
            if (
                backend == "triton"
                and device.type != "cuda"
                and os.environ.get("TRITON_INTERPRET") != "1"
            ):
                continue
            inputs = [
                value.to(torch.bfloat16 if dtype == "bf16" else torch.float32).requires_grad_(),
                locations.clone().requires_grad_(),
                weights.clone().requires_grad_(),
            ]

            def step(inputs=inputs, backend=backend, shapes=shapes) -> None:
                out = ms_deform_attn(inputs[0], shapes, inputs[1], inputs[2], backend=backend)
                torch.autograd.grad(out.float().sum(), inputs)

            reset_peak(device)
            seconds = timed(step, device, args.warmup, args.iters)
            results[f"{where}/{backend}/{dtype}"] = {
                "fwd_bwd_ms": seconds * 1e3,
                "peak_mib": peak_mib(device),
            }
    return results


def measure_self_label(model, device, args) -> dict:
    """images x sizes per second: one image per pass, and batches of 8 by bucket."""
    os.environ[BACKEND_ENV] = "triton" if device.type == "cuda" else "pytorch"
    model.compile_network = False
    model.eval()
    gen = torch.Generator().manual_seed(0)
    shapes = [(375, 500), (500, 375), (375, 500), (333, 500)] * 4  # ImageNet's commonest
    sizes = SELF_LABEL_MIN_SIZES if not args.smoke else (96, 112)
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in shapes]
    labels = [torch.tensor([int(i) % model.num_classes]).to(device) for i in range(len(images))]
    results = {}
    for batch_size in (1, 8):

        def run(batch_size=batch_size) -> None:
            with torch.no_grad():
                for size in sizes:
                    resized = [resize_shortest_edge(img, size, 1333).to(device) for img in images]
                    pseudo_label_in_buckets(
                        model,
                        resized,
                        labels,
                        batch_size=batch_size,
                        choice="max-score",
                        min_area=0.0,
                    )

        seconds = timed(run, device, 1, max(1, args.iters // 5))
        results[f"batch_{batch_size}"] = len(images) * len(sizes) / seconds
    return results


MODEL_COLUMNS = (
    ("train img/s", "train_img_s"),
    ("peak MiB", "train_peak_mib"),
    ("K=3 img/s", "infer_k3_img_s"),
    ("K=50 img/s", "infer_k50_img_s"),
)


def ratio(value: float, base: float | None) -> str:
    """``value / base`` as a column, or '-' where there is no baseline (or no value)."""
    if not base or value != value or base != base:
        return "     -"
    return f"{value / base:5.2f}x"


def print_model_table(name: str, rows: dict[str, dict]) -> None:
    base = rows.get("pytorch/fp32/eager", {})
    print(f"\n{name}: 2 images per GPU; train = forward, loss, backward, SGD step")
    print(f"{'variant':26s}" + "".join(f" {title:>11s} {'x':>6s}" for title, _ in MODEL_COLUMNS))
    for variant, r in rows.items():
        if "error" in r:
            print(f"{variant:26s} failed: {r['error']}")
            continue
        cells = [
            f" {r[key]:11.2f} {ratio(r[key], base.get(key))}"
            if r[key] == r[key]
            else f" {'-':>11s} {'-':>6s}"
            for _, key in MODEL_COLUMNS
        ]  # peak memory is measured on CUDA only
        print(f"{variant:26s}" + "".join(cells))


def print_msda_table(rows: dict[str, dict]) -> None:
    print("\ndeformable attention core, forward + backward")
    print("(batch 2, 8 heads x 32 channels, 4 levels x 4 points; x = speed-up over pytorch/fp32)")
    for key, r in rows.items():
        base = rows.get(key.split("/")[0] + "/pytorch/fp32", {}).get("fwd_bwd_ms")
        speedup = ratio(base, r["fwd_bwd_ms"]) if base else "     -"
        peak = f"peak {r['peak_mib']:8.0f} MiB" if r["peak_mib"] == r["peak_mib"] else ""
        print(f"{key:28s} {r['fwd_bwd_ms']:9.2f} ms {speedup}  {peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["r50", "swin-b"], choices=sorted(RECIPES))
    parser.add_argument("--iters", type=int, default=10, help="timed repetitions per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions (compilation)")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "reference",
    )
    parser.add_argument("--smoke", action="store_true", help="the toy model on CPU, tiny sizes")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type != "cuda" and not args.smoke:
        parser.error("no CUDA device: run with --smoke to check the script on the CPU")
    recipes = ["toy"] if args.smoke else args.recipes
    sizes = SMOKE_SIZES if args.smoke else LVIS_SIZES
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "sizes": sizes,
        "iters": args.iters,
    }
    print(f"device {report['device']}, torch {torch.__version__}, images {sizes}")
    for short in recipes:
        recipe = load_recipe(RECIPES[short])
        torch.manual_seed(0)
        try:
            model = build_model(recipe, data_root=ensure_metadata(recipe, args.data_root)).to(
                device
            )
        except torch.OutOfMemoryError as error:
            print(f"\n{short}: does not fit ({error})")
            continue
        rows = {}
        for variant in variants(device, with_compile=not args.no_compile):
            try:
                rows[variant.name] = measure_variant(model, variant, device, sizes, args)
            except Exception as error:  # noqa: BLE001 - one failed variant must not hide the rest
                rows[variant.name] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        print_model_table(f"{short} ({RECIPES[short]})", rows)
        report[short] = rows
        if short == recipes[0]:
            report["self_label"] = measure_self_label(model, device, args)
        del model
    report["msda"] = measure_msda(device, sizes, args)
    print_msda_table(report["msda"])
    sl = report["self_label"]
    print(
        f"\nself-labelling, images x sizes per second: one image per pass {sl['batch_1']:.2f}, "
        f"batches of 8 by bucket {sl['batch_8']:.2f} ({sl['batch_8'] / sl['batch_1']:.2f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
