"""convert + merge + dedup at ImageNet-LVIS scale against a plain reimplementation of the
original chain (json module, per-image NMS loop), same run; then self-label with all sizes in one
pass against one pass per size on the toy model.

Each chain runs in its own process so its peak resident memory is its own.

    python benchmarks/bench_pseudo.py [--images 1200000] [--sizes 5] [--skip-self-label]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import run_child


def make_inputs(root: Path, num_images: int, num_sizes: int) -> None:
    """An image-info file and one results file per size (one box per image, jittered)."""
    import orjson

    rng = np.random.default_rng(0)
    cats = rng.integers(1, 1204, num_images)
    images = [
        {
            "id": i + 1,
            "file_name": f"n{int(c):08d}/{i}.JPEG",
            "width": 500,
            "height": 375,
            "pos_category_ids": [int(c)],
        }
        for i, c in enumerate(cats)
    ]
    info = {
        "images": images,
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 1204)],
        "annotations": [],
    }
    (root / "info.json").write_bytes(orjson.dumps(info))
    base = rng.uniform(0, 200, (num_images, 4)) + np.array([0, 0, 50, 50])
    for s in range(num_sizes):
        boxes = base + rng.normal(0, 3 * s, base.shape)
        scores = rng.random(num_images)
        records = [
            {
                "image_id": i + 1,
                "category_id": int(cats[i]),
                "bbox": boxes[i].tolist(),
                "score": float(scores[i]),
            }
            for i in range(num_images)
        ]
        (root / f"minsize_{s}.json").write_bytes(orjson.dumps(records))


def decola_chain(root: Path, num_sizes: int) -> None:
    from decola_core.pseudo.postprocess import convert, dedup, merge

    files = []
    for s in range(num_sizes):
        files.append(root / f"d_p{s}.json")
        convert(root / f"minsize_{s}.json", root / "info.json", files[-1], cache_dir=root / "cache")
    merge(files, root / "d_merged.json")
    dedup(root / "d_merged.json", root / "d_final.json")


def original_chain(root: Path, num_sizes: int) -> None:
    """The original tools' algorithm (spec pipeline §5.2-5.4) with the json module."""
    import torch
    from torchvision.ops import nms

    names = []
    for s in range(num_sizes):  # convert_predictions_to_pseudo_annotations.py
        with open(root / f"minsize_{s}.json") as f:
            preds = json.load(f)
        for i, p in enumerate(preds):
            p["id"] = i + 1
        with open(root / "info.json") as f:
            info = json.load(f)
        info["annotations"] = preds
        names.append(root / f"o_p{s}.json")
        with open(names[-1], "w") as f:
            json.dump(info, f)
    loaded = []  # make_multi_resolution_pseudo_annotations.py: every file held at once
    for name in names:
        with open(name) as f:
            loaded.append(json.load(f))
    by_image: dict = {}
    for data in loaded:
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    merged = {
        "images": loaded[0]["images"],
        "categories": loaded[0]["categories"],
        "annotations": [],
    }
    k = 0
    for anns in by_image.values():
        for ann in anns:
            k += 1
            ann["id"] = k
            merged["annotations"].append(ann)
    with open(root / "o_merged.json", "w") as f:
        json.dump(merged, f)
    with open(root / "o_merged.json") as f:  # deduplicate_pseudo_annotations.py
        data = json.load(f)
    grouped: dict = {}
    for ann in data["annotations"]:
        grouped.setdefault(ann["image_id"], []).append(ann)
    out, k = [], 0
    for image_id, anns in grouped.items():
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
        scores = torch.tensor([a["score"] for a in anns], dtype=torch.float32)
        for idx in nms(boxes, scores, 0.9).tolist():
            k += 1
            out.append(
                {
                    "image_id": image_id,
                    "category_id": anns[idx]["category_id"],
                    "bbox": anns[idx]["bbox"],
                    "score": anns[idx]["score"],
                    "id": k,
                }
            )
    data["annotations"] = out
    with open(root / "o_final.json", "w") as f:
        json.dump(data, f)


def self_label_rates(tmp: Path) -> tuple[float, float, float]:
    """images*sizes per second, all sizes in one pass vs one pass per size (toy model), and
    the seconds one image takes to decode."""
    import torch

    from decola_core.config import load_recipe
    from decola_core.data.toy import ensure_toy_dataset
    from decola_core.engine.distributed import DistContext
    from decola_core.modeling import build_model
    from decola_core.modeling.checkpoint import save_weights
    from decola_core.pseudo.self_label import SelfLabelJob, run_self_label

    torch.set_num_threads(2)
    data_root = tmp / "data"
    root = ensure_toy_dataset(data_root)
    recipe = load_recipe("toy/DECOLA_PHASE1_Toy")
    torch.manual_seed(0)
    weights = save_weights(build_model(recipe, data_root=data_root), tmp / "toy.pth")
    sizes = [96, 112, 128, 144, 160]

    def job(out: str, min_sizes: list[int]) -> SelfLabelJob:
        return SelfLabelJob(
            recipe=recipe,
            weights=weights,
            image_info=root / "annotations" / "toy_image_labels.json",
            image_root=root / "images",
            output_dir=tmp / out,
            min_sizes=min_sizes,
            max_size=200,
            shard_images=64,
            data_root=data_root,
        )

    run_self_label(
        job("warm_up", sizes[:1]), DistContext(), progress=False
    )  # first-call costs paid here
    start = time.perf_counter()
    run_self_label(job("one_pass", sizes), DistContext(), progress=False)
    one_pass = 64 * len(sizes) / (time.perf_counter() - start)
    start = time.perf_counter()
    for size in sizes:
        run_self_label(job(f"size_{size}", [size]), DistContext(), progress=False)
    per_size = 64 * len(sizes) / (time.perf_counter() - start)
    return one_pass, per_size, _decode_seconds(root / "images")


def _decode_seconds(images: Path) -> float:
    """Mean seconds to read and decode one image of the set: the work one pass saves."""
    from decola_core.data.images import read_image

    paths = sorted(p for p in images.rglob("*") if p.is_file())
    start = time.perf_counter()
    for path in paths:
        read_image(path)
    return (time.perf_counter() - start) / len(paths)


def imagenet_jpeg_decode_seconds(tmp: Path, repeat: int = 50) -> float:
    """Seconds to read and decode an ImageNet-sized (500x375, quality 90) photo-like JPEG."""
    from PIL import Image

    from decola_core.data.images import read_image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500]
    smooth = np.stack([x * 0.5, y * 0.6, (x + y) * 0.3], -1) % 256
    pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    path = tmp / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    read_image(path)
    start = time.perf_counter()
    for _ in range(repeat):
        read_image(path)
    return (time.perf_counter() - start) / repeat


def _formatting_workers() -> int:
    from decola_core.pseudo.records import PARALLEL_MIN_BOXES, formatting_workers

    return formatting_workers(PARALLEL_MIN_BOXES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_200_000)
    parser.add_argument("--sizes", type=int, default=5)
    parser.add_argument("--skip-self-label", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        start = time.perf_counter()
        (decola_chain if args.child == "decola" else original_chain)(args.root, args.sizes)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # forked JSON formatters: their peak counts the pages they share with this process too,
        # so parent + workers x worker peak is an upper bound of the memory in use at once
        worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        workers = _formatting_workers() if worker else 0
        bound = peak + workers * worker
        print(json.dumps({"seconds": seconds, "peak_mib": bound, "workers": workers}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_inputs(root, args.images, args.sizes)
        print(
            f"{args.images:,} images x {args.sizes} sizes = {args.images * args.sizes:,} boxes "
            f"(inputs written in {time.perf_counter() - start:.0f} s)"
        )
        results = {}
        for name in ("decola", "original"):
            results[name] = run_child(
                __file__, "--child", name, "--root", str(root), "--sizes", str(args.sizes)
            )
        d, o = results["decola"], results["original"]
        print(f"{'chain':34s} {'seconds':>9s} {'peak MiB':>9s}")
        if d["workers"]:
            print(f"(decola peak: parent + {d['workers']} forked formatters, an upper bound)")
        print(f"{'decola convert+merge+dedup':34s} {d['seconds']:9.1f} {d['peak_mib']:9.0f}")
        print(f"{'original chain (json, NMS loop)':34s} {o['seconds']:9.1f} {o['peak_mib']:9.0f}")
        ratio = d["peak_mib"] / o["peak_mib"]
        print(f"speed-up {o['seconds'] / d['seconds']:.1f}x, peak memory ratio {ratio:.2f}")
        if not args.skip_self_label:
            one, per, decode = self_label_rates(root)
            print(
                f"self-label (toy, 5 sizes): one pass {one:.1f} images*sizes/s, one pass per size "
                f"{per:.1f} -> {one / per:.2f}x (decode {1000 * decode:.1f} ms/image, "
                f"one size {1000 / per:.1f} ms/image)"
            )
            jpeg = imagenet_jpeg_decode_seconds(root)
            print(
                f"an ImageNet-sized JPEG decodes in {1000 * jpeg:.1f} ms; with 5 sizes one pass "
                f"reaches 1.5x where a size's forward takes at most {1000 * jpeg / 0.7:.1f} ms"
            )


if __name__ == "__main__":
    main()
