"""``decola export``: a detector to ONNX or TorchScript, checked against PyTorch right after.

The file is written with its metadata beside it, ``FILE.json``: the recipe, the weights'
checksum, the vocabulary, embedding provenance, the input/output spec, the opset and the parity
figures. Both go to temporary files in the output folder first. When the parity check fails,
nothing is left under the final names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from decola_core.errors import DecolaError, InputError
from decola_core.export.graph import DetectionGraph
from decola_core.utils.io import atomic_write_text

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 18
MIN_OPSET = 16  # GridSample on 4-D inputs
FORMAT_VERSION = 1
INSTALL_HINT = (
    'ONNX needs the export extra: pip install "decola[export]" (onnx, onnxruntime, onnxscript)'
)
#: Image sizes the parity check of a dynamic export runs at (two shapes, two aspect ratios).
DYNAMIC_CHECK_SIZES = ((96, 128), (128, 96))
#: Detections below this score are not compared beyond the top ones (their order is noise).
SCORE_FLOOR = 1e-3
#: The smallest image side of a dynamic export (the coarsest feature map must exceed 1 x 1).
MIN_DYNAMIC_SIDE = 64


@dataclass
class ExportSpec:
    """What to export: format, mode, inputs and sizes."""

    format: str = "onnx"
    mode: str = "object"
    image_size: tuple[int, int] | None = (800, 1333)  # None: any size (dynamic)
    batch: int = 1
    opset: int = DEFAULT_OPSET
    with_preprocess: bool = False
    embeddings_input: bool = False
    max_detections: int = 300
    prompts: int = 3  # K of the example inputs (conditioned mode; any K at run time)
    tolerance: float = 1e-4  # relative to the scores' scale (1) and the boxes' (image size)

    @property
    def dynamic(self) -> bool:
        return self.image_size is None


@dataclass
class Parity:
    """The exported file against PyTorch eager on the same inputs."""

    image_sizes: list[list[int]]
    max_abs_diff_boxes: float
    max_abs_diff_scores: float
    topk_match: bool
    tolerance_relative: float
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        box_scale = max(max(s) for s in self.image_sizes)
        self.passed = (
            self.topk_match
            and self.max_abs_diff_boxes <= self.tolerance_relative * box_scale
            and self.max_abs_diff_scores <= self.tolerance_relative
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def example_inputs(
    graph: DetectionGraph, size: tuple[int, int], batch: int, prompts: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Inputs of ``size`` for the graph: random pixels (normalised as the model expects unless
    the graph preprocesses them), ``prompts`` prompt ids, the vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch, size[0], size[1], 3), generator=gen, dtype=torch.uint8)
    inputs = [pixels if graph.with_preprocess else graph.normalise(pixels)]
    if graph.conditioned:
        count = min(prompts, graph.num_classes)
        inputs.append(torch.randperm(graph.num_classes, generator=gen)[:count].sort().values)
    if graph.embeddings_input:
        inputs.append(graph.class_embeddings().clone())
    return tuple(inputs)


def export_model(
    model, spec: ExportSpec, output: Path, *, metadata: dict | None = None
) -> tuple[Path, dict]:
    """Export ``model`` as ``spec`` says to ``output``, check it against eager PyTorch, and
    write ``output`` and ``output.json``; returns the metadata written."""
    check_spec(spec)
    graph = DetectionGraph(
        model.cpu(),
        mode=spec.mode,
        max_detections=spec.max_detections,
        with_preprocess=spec.with_preprocess,
        embeddings_input=spec.embeddings_input,
    ).eval()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    check_spec(spec)
    # the second run is at another batch size and K (and, dynamic, another image size)
    sizes = DYNAMIC_CHECK_SIZES if spec.dynamic else (spec.image_size, spec.image_size)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            # a batch of 2 (and K >= 2): torch.export fixes dimensions of size 1 to constants
            batch = max(2, spec.batch) if spec.dynamic else spec.batch
            example = example_inputs(graph, sizes[0], batch, max(2, spec.prompts))
            if spec.format == "onnx":
                _export_onnx(graph, example, temporary, spec)
            else:
                _export_torchscript(graph, example, temporary)
        seconds = time.perf_counter() - start
        parity = check_parity(graph, temporary, spec, sizes)
        meta = _metadata(graph, spec, parity, metadata or {}, seconds)
        if not parity.passed:
            raise DecolaError(
                f"the exported model differs from PyTorch beyond the tolerance "
                f"(boxes max |diff| {parity.max_abs_diff_boxes:.3g} px, scores "
                f"{parity.max_abs_diff_scores:.3g}, top-k match {parity.topk_match}); "
                f"nothing written to {output}"
            )
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
    atomic_write_text(output.with_name(output.name + ".json"), json.dumps(meta, indent=2) + "\n")
    return output, meta


def check_spec(spec: ExportSpec) -> None:
    """Refuse what cannot be exported, before any model is built."""
    if spec.format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)} (got '{spec.format}')")
    if spec.dynamic and spec.format == "torchscript":
        raise InputError(
            "a TorchScript trace serves one image size (any batch and K); use --format onnx for "
            "--dynamic, or give --image-size"
        )
    if spec.format == "onnx" and spec.opset < MIN_OPSET:
        raise InputError(
            f"--opset {spec.opset}: the deformable attention's GridSample needs opset "
            f"{MIN_OPSET} or newer"
        )
    if spec.format == "onnx":
        require_onnx()


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise InputError(INSTALL_HINT) from None


def _dynamic_shapes(graph: DetectionGraph, spec: ExportSpec) -> tuple | None:
    dims: list[dict | None] = []
    if spec.dynamic:
        batch = torch.export.Dim("batch", min=1, max=64)
        height = torch.export.Dim("height", min=MIN_DYNAMIC_SIDE, max=4096)
        width = torch.export.Dim("width", min=MIN_DYNAMIC_SIDE, max=4096)
        dims.append({0: batch, 1: height, 2: width} if graph.with_preprocess
                    else {0: batch, 2: height, 3: width})  # fmt: skip
    else:
        dims.append(None)
    if graph.conditioned:
        dims.append({0: torch.export.Dim("prompts", min=1, max=graph.num_classes)})
    if graph.embeddings_input:
        dims.append({0: torch.export.Dim("classes", min=2, max=1 << 20)})
    return tuple(dims) if any(d is not None for d in dims) else None


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's own progress lines and warnings off (decola reports what matters)."""
    loggers = [
        logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_onnx(graph: DetectionGraph, example: tuple, path: Path, spec: ExportSpec) -> None:
    with _quiet_exporter():
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            opset_version=spec.opset,
            input_names=graph.input_names(),
            output_names=list(graph.output_names),
            dynamic_shapes=_dynamic_shapes(graph, spec),
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def _export_torchscript(graph: DetectionGraph, example: tuple, path: Path) -> None:
    with _quiet_exporter():
        traced = torch.jit.trace(graph, example, check_trace=False)
    traced.save(str(path))


def run_exported(path: Path, fmt: str, inputs: tuple[torch.Tensor, ...], names: list[str]):
    """Outputs (boxes, scores, classes, count) of an exported file, as numpy arrays."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
    with warnings.catch_warnings():  # TorchScript's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path))
    with torch.no_grad():
        return [t.numpy() for t in module(*inputs)]


def check_parity(graph: DetectionGraph, path: Path, spec: ExportSpec, sizes) -> Parity:
    """Eager and exported outputs on fresh inputs at ``sizes`` (and, conditioned, another K)."""
    box_diff = score_diff = 0.0
    matched = True
    for n, size in enumerate(sizes):
        # the second run: another K than exported (and, dynamic, another batch size)
        batch = 1 + spec.batch % 2 if n and spec.dynamic else spec.batch
        prompts = spec.prompts if n == 0 else 1 + spec.prompts % 4
        inputs = example_inputs(graph, tuple(size), batch, prompts, seed=100 + n)
        with torch.no_grad():
            eager = [t.numpy() for t in graph(*inputs)]
        exported = run_exported(path, spec.format, inputs, graph.input_names())
        b, s, m = compare_outputs(eager, exported)
        box_diff, score_diff, matched = max(box_diff, b), max(score_diff, s), matched and m
    runs = [list(s) for s in dict.fromkeys(tuple(s) for s in sizes)]
    return Parity(runs, box_diff, score_diff, matched, spec.tolerance)


def compare_outputs(
    eager, exported, top: int = 10, window: int = 2, floor: float = SCORE_FLOOR
) -> tuple[float, float, bool]:
    """Max |diff| of boxes and scores between matched detections scoring at least ``floor``
    (below it the order of near-equal scores is arbitrary), and whether the top detections
    agree: the same count, and each of the first ``top`` has a counterpart of its class within
    ``window`` ranks (near-tied scores may swap)."""
    boxes_a, scores_a, classes_a, count_a = eager
    boxes_b, scores_b, classes_b, count_b = (np.asarray(x) for x in exported)
    box_diff = score_diff = 0.0
    matched = bool(np.array_equal(count_a, count_b))
    for i in range(len(count_a)):
        n = min(int(count_a[i]), int(count_b[i]))
        for j in range(n):
            if j >= top and scores_a[i, j] < floor:
                break
            lo, hi = max(0, j - window), min(n, j + window + 1)
            same = [k for k in range(lo, hi) if classes_b[i, k] == classes_a[i, j]]
            if not same:
                matched = matched and j >= top
                continue
            # Closest in box and score together: one query's box can repeat over several
            # detections (boxes clipped to the image) that differ only in score.
            scale = 1.0 + float(np.abs(boxes_a[i, j]).max())
            k = min(
                same,
                key=lambda k: (
                    np.abs(boxes_b[i, k] - boxes_a[i, j]).max() / scale
                    + abs(scores_b[i, k] - scores_a[i, j])
                ),
            )
            box_diff = max(box_diff, float(np.abs(boxes_b[i, k] - boxes_a[i, j]).max()))
            score_diff = max(score_diff, float(abs(scores_b[i, k] - scores_a[i, j])))
    return box_diff, score_diff, matched


def _tensor(shape: list, dtype: str, meaning: str) -> dict:
    return {"shape": shape, "dtype": dtype, "meaning": meaning}


def _metadata(
    graph: DetectionGraph, spec: ExportSpec, parity: Parity, extra: dict, seconds: float
) -> dict:
    model = graph.model
    h, w = spec.image_size if spec.image_size else ("height", "width")
    batch = spec.batch if not spec.dynamic else "batch"
    if graph.with_preprocess:
        images = _tensor([batch, h, w, 3], "uint8", "RGB pixels, NHWC; normalised in the graph")
    else:
        images = _tensor(
            [batch, 3, h, w],
            "float32",
            f"NCHW, channels {model.input_format}, (pixel - pixel_mean) / pixel_std",
        )
    images["channels"] = "RGB" if graph.with_preprocess else model.input_format
    images["pixel_mean"] = model.pixel_mean.flatten().tolist()
    images["pixel_std"] = model.pixel_std.flatten().tolist()
    inputs = {"images": images}
    if graph.conditioned:
        inputs["prompt_ids"] = _tensor(["prompts"], "int64", "vocabulary rows to detect (any K)")
    if graph.embeddings_input:
        inputs["embeddings"] = _tensor(
            ["classes", graph.embed_dim], "float32", "the vocabulary, one embedding per row"
        )
    m = spec.max_detections
    outputs = {
        "boxes": _tensor([batch, m, 4], "float32", "xyxy in input pixels; padding rows 0"),
        "scores": _tensor([batch, m], "float32", "descending; padding rows -1"),
        "classes": _tensor([batch, m], "int64", "0-based vocabulary rows; padding -1"),
        "count": _tensor([batch], "int64", "valid rows per image"),
    }
    return {
        "format_version": FORMAT_VERSION,
        "format": spec.format,
        "opset": spec.opset if spec.format == "onnx" else None,
        "mode": spec.mode,
        "dynamic": spec.dynamic,
        "image_size": list(spec.image_size) if spec.image_size else None,
        "with_preprocess": graph.with_preprocess,
        "embeddings_input": graph.embeddings_input,
        "architecture": model.architecture,
        "inputs": inputs,
        "outputs": outputs,
        "parity": asdict(parity),
        "export_seconds": round(seconds, 2),
        "torch": torch.__version__,
        **extra,
    }
