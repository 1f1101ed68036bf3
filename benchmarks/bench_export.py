"""CPU latency per image of exported detectors: PyTorch eager vs onnxruntime, same run, same
inputs, the same thread count for both.

Models: the toy phase-1 model (128 x 160 input) and the full R50-21k phase-1 architecture
(random weights, 800 x 1067 input, the LVIS test size of a 4:3 image), each in object mode and in
conditioned mode with K = 3 prompts. Each model is exported at its input size (a fixed-size
file) and timed: one warm-up, then the median of ``--repeats`` runs. The exporter's parity
figures are printed, not enforced: with random weights the conditioned first stage picks its
top tokens among near-equal scores, so float-level differences can pick other queries.

    python benchmarks/bench_export.py [--threads 2] [--repeats 3] [--models toy r50]
        [--reference-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import add_reference_dir_argument

CASES = {
    "toy": ("toy phase 1", "toy/DECOLA_PHASE1_Toy", (128, 160)),
    "r50": ("R50-21k phase 1", "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x", (800, 1067)),
}
MODES = (("object", None), ("conditioned K=3", 3))


def _median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=list(CASES), default=list(CASES))
    add_reference_dir_argument(parser)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from decola_core.config import load_recipe
    from decola_core.data.toy import ensure_toy_dataset
    from decola_core.export.exporter import ExportSpec, example_inputs, export_model
    from decola_core.export.graph import DetectionGraph
    from decola_core.modeling import build_model

    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    print(f"CPU, {args.threads} threads for torch and onnxruntime; median of {args.repeats} runs")
    print(f"{'model':18s}{'mode':17s}{'input':>11s}{'eager ms':>11s}{'onnx ms':>10s}"
          f"{'x eager':>9s}{'export s':>10s}{'box |d| px':>12s}{'score |d|':>11s}")  # fmt: skip
    for label, name, size in (CASES[m] for m in args.models):
        recipe = load_recipe(name)
        data_root = args.reference_dir
        if name.startswith("toy/"):
            data_root = work / "data"
            ensure_toy_dataset(data_root)
        torch.manual_seed(0)
        model = build_model(recipe, data_root=data_root).eval()
        for mode_label, prompts in MODES:
            mode = "object" if prompts is None else "conditioned"
            spec = ExportSpec(format="onnx", mode=mode, image_size=size, prompts=prompts or 3,
                              max_detections=recipe.test.detections_per_image,
                              tolerance=float("inf"))  # fmt: skip
            path, meta = export_model(model, spec, work / f"{label}_{mode}.onnx".replace(" ", "_"))
            graph = DetectionGraph(model, mode=mode, max_detections=spec.max_detections).eval()
            inputs = example_inputs(graph, size, 1, prompts or 3, seed=1)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {n: x.numpy() for n, x in zip(graph.input_names(), inputs, strict=True)}

            def eager(graph=graph, inputs=inputs):
                with torch.no_grad():
                    graph(*inputs)

            eager_s = _median_seconds(eager, args.repeats)
            onnx_s = _median_seconds(lambda s=session, f=feed: s.run(None, f), args.repeats)
            print(
                f"{label:18s}{mode_label:17s}{size[0]:>5d}x{size[1]:<5d}{eager_s * 1e3:11.1f}"
                f"{onnx_s * 1e3:10.1f}{eager_s / onnx_s:8.2f}x{meta['export_seconds']:10.1f}"
                f"{meta['parity']['max_abs_diff_boxes']:12.2g}"
                f"{meta['parity']['max_abs_diff_scores']:11.2g}"
            )


if __name__ == "__main__":
    main()
