"""Training throughput on this machine: images/s of full training steps of the R50-21k phase-1
recipe, and of the data loader alone (so a slow loader is visible).

A synthetic LVIS-format set of ~640x480 JPEG images is generated in a temporary folder; the
class embeddings come from the reference metadata (``--reference-dir``).

    python benchmarks/bench_train.py [--steps 3] [--workers 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_reference_dir_argument


def make_dataset(root: Path, num_images: int, reference_dir: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "metadata").mkdir()
    for name in (
        "lvis_v1_clip_a+cname.npy",
        "lvis_v1_clip_a+object.npy",
        "lvis_v1_train_cat_info.json",
    ):
        os.symlink(reference_dir / "metadata" / name, root / "metadata" / name)
    cats = json.loads((reference_dir / "metadata" / "lvis_v1_train_cat_info.json").read_text())
    images, annotations = [], []
    for i in range(num_images):
        h, w = (480, 640) if i % 2 else (640, 480)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.jpg"
        )
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": h, "width": w})
        for _ in range(5):
            bw, bh = rng.uniform(20, 200, 2)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, 1204)),
                    "bbox": [
                        float(rng.uniform(0, w - bw)),
                        float(rng.uniform(0, h - bh)),
                        float(bw),
                        float(bh),
                    ],
                    "area": float(bw * bh),
                }
            )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": c["id"], "name": c["name"], "frequency": c["frequency"]} for c in cats
        ],
    }
    (root / "train.json").write_text(json.dumps(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu"
    )
    add_reference_dir_argument(parser)
    args = parser.parse_args()
    import torch

    from decola_core.config import load_recipe
    from decola_core.data.loader import TrainData
    from decola_core.engine.distributed import DistContext
    from decola_core.engine.trainer import Trainer, TrainOptions
    from decola_core.modeling import build_model

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root, 48, args.reference_dir)
        overrides = [
            "data.datasets.bench={image_root: "
            + str(root / "images")
            + ", annotations: "
            + str(root / "train.json")
            + "}",
            "data.train=[{name: bench}]",
            f"data.num_workers={args.workers}",
            "logging.period=1",
        ]
        recipe = load_recipe("DECOLA_PHASE1_Lbase_CLIP_R5021k_4x", overrides)
        per_step = 2  # images per step per device (the recipe's 16 over 8 GPUs)
        recipe = recipe.model_copy(
            update={"solver": recipe.solver.model_copy(update={"ims_per_batch": per_step})}
        )
        data = TrainData(recipe, root, seed=0)
        start, count = time.perf_counter(), 0
        for i, batch in enumerate(data.batches(args.workers)):
            count += len(batch.samples)
            if i == 20:
                break
        loader_rate = count / (time.perf_counter() - start)
        options = TrainOptions(
            output_dir=root / "out",
            data_root=root,
            max_iter=args.steps + 1,
            checkpoint_period=10**9,
            num_workers=args.workers,
        )
        options.output_dir.mkdir()
        context = DistContext(device=torch.device(args.device))
        trainer = Trainer(recipe, options, context, lambda r: build_model(r, data_root=root))
        times = []

        def on_log(record: dict) -> None:
            times.append(record["seconds"])

        trainer.run(on_log)
        step_s = float(np.median(times[1:])) if len(times) > 1 else times[0]
    print(
        f"device {args.device}, {per_step} images per step, torch threads {torch.get_num_threads()}"
    )
    rate = per_step / step_s
    print(f"training step (R50-21k phase 1, ~640x480): {step_s:6.2f} s/step  {rate:6.2f} images/s")
    print(
        f"data loader alone ({args.workers} workers):          {loader_rate:6.1f} images/s"
        f"  ({loader_rate / (per_step / step_s):.0f}x the step's demand)"
    )


if __name__ == "__main__":
    main()
