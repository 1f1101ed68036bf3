"""``decola export``: ONNX and TorchScript files of the DETR detectors, their parity with
PyTorch, their metadata, and running them (``predict --backend``, ``Detector.from_exported``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decola_core.config import load_recipe
from decola_core.errors import DecolaError, InputError
from decola_core.export import exporter
from decola_core.export.exporter import ExportSpec, export_model
from decola_core.modeling import build_model, load_weights


@pytest.fixture(scope="module")
def toy(toy_model):
    """(data root, weights, the toy phase-1 model with those weights)."""
    data_root, _, weights = toy_model
    model = build_model(load_recipe("toy/DECOLA_PHASE1_Toy"), data_root=data_root)
    load_weights(model, weights)
    return data_root, weights, model.eval()


@pytest.fixture(scope="module")
def dynamic_onnx(toy, tmp_path_factory) -> Path:
    """The toy model exported to ONNX in conditioned mode for any image size (the job
    ``decola export --mode conditioned --dynamic`` runs)."""
    from decola_core.export.job import run_export
    from decola_core.jobs import ExportJob

    data_root, weights, _ = toy
    out = tmp_path_factory.mktemp("onnx") / "toy_conditioned.onnx"
    run_export(
        ExportJob(weights=str(weights), output=out, mode="conditioned", dynamic=True,
                  data_root=data_root)
    )  # fmt: skip
    return out


def test_cli_exports_onnx_with_its_metadata_and_parity(decola, toy, tmp_path) -> None:
    data_root, weights, _ = toy
    out = tmp_path / "toy.onnx"
    result = decola(
        "export", "--weights", str(weights), "--data-root", str(data_root),
        "--image-size", "128", "160", "--output", str(out), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "parity with PyTorch at 128x160" in result.stderr
    assert "Skipping constant folding" not in result.stderr + result.stdout  # exporter noise
    meta = json.loads((tmp_path / "toy.onnx.json").read_text())
    assert meta["format"] == "onnx" and meta["opset"] == 18 and meta["mode"] == "object"
    assert meta["recipe"] == "toy/DECOLA_PHASE1_Toy" and meta["image_size"] == [128, 160]
    assert meta["weights_sha256"] == exporter.sha256_of(weights)
    assert len(meta["vocabulary"]["names"]) == 8 and meta["vocabulary"]["names"][0] == "red_square"
    assert meta["inputs"]["images"]["shape"] == [1, 3, 128, 160]
    assert meta["outputs"]["boxes"]["shape"] == [1, 30, 4]
    parity = meta["parity"]
    assert parity["passed"] and parity["topk_match"]
    assert parity["max_abs_diff_scores"] <= 1e-4 and parity["max_abs_diff_boxes"] <= 1e-4 * 160
    import onnx

    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["boxes", "scores", "classes", "count"]


def test_a_dynamic_conditioned_onnx_file_serves_any_size_batch_and_k(toy, dynamic_onnx) -> None:
    _, _, model = toy
    meta = json.loads(dynamic_onnx.with_name(dynamic_onnx.name + ".json").read_text())
    assert meta["dynamic"] and meta["parity"]["image_sizes"] == [[96, 128], [128, 96]]
    assert meta["inputs"]["prompt_ids"]["shape"] == ["prompts"]
    graph = exporter.DetectionGraph(model, mode="conditioned", max_detections=30)
    for size, batch, k in (((144, 112), 3, 1), ((80, 200), 1, 6)):
        inputs = exporter.example_inputs(graph, size, batch, k, seed=7)
        with torch.no_grad():
            eager = [t.numpy() for t in graph(*inputs)]
        exported = exporter.run_exported(dynamic_onnx, "onnx", inputs, graph.input_names())
        assert exported[0].shape == (batch, 30, 4)
        box_diff, score_diff, matched = exporter.compare_outputs(eager, exported)
        assert matched and score_diff < 1e-4 and box_diff < 1e-4 * max(size), (size, k)
        assert set(np.unique(exported[2][exported[2] >= 0])) <= set(inputs[1].tolist())


def test_predict_with_the_onnx_backend_equals_torch_predict(
    decola, toy, dynamic_onnx, tmp_path
) -> None:
    from decola_core import Detector

    data_root, weights, _ = toy
    images = [data_root / "toy" / "images" / f"toy_val_000{i}.png" for i in range(2)]
    sizes = {Image.open(p).size for p in images}
    assert len(sizes) == 2  # two image sizes through the one file
    common = ["--classes", "red_square,green_circle,blue_triangle", "--threshold", "0.001"]
    runs = {}
    for backend, model in (("torch", ["--weights", str(weights)]),
                           ("onnx", ["--model", str(dynamic_onnx)])):  # fmt: skip
        out = tmp_path / backend
        result = decola(
            "predict", *map(str, images), "--backend", backend, *model,
            "--data-root", str(data_root), *common, "--output-dir", str(out), timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        runs[backend] = [json.loads((out / f"{p.stem}.json").read_text()) for p in images]
        assert all((out / f"{p.stem}.png").is_file() for p in images)
    for mine, theirs in zip(runs["onnx"], runs["torch"], strict=True):
        a, b = mine["detections"], theirs["detections"]
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            assert x["class_name"] == y["class_name"]
            assert abs(x["score"] - y["score"]) <= 1e-3  # the JSON keeps 4 decimals
            assert np.allclose(x["box_xyxy"], y["box_xyxy"], atol=0.011)  # and 2 for boxes
    # the same from Python, with no torch model built
    exported = Detector.from_onnx(dynamic_onnx)
    torch_detector = Detector.from_pretrained(weights, data_root=data_root)
    assert exported.class_names == torch_detector.class_names
    found = exported.detect(images[0], classes=["red_square", "yellow_circle"], threshold=0.0)
    expected = torch_detector.detect(images[0], classes=["red_square", "yellow_circle"],
                                     threshold=0.0)  # fmt: skip
    assert found.names == expected.names
    torch.testing.assert_close(found.scores, expected.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(found.boxes, expected.boxes, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mode", ["object", "conditioned"])
def test_torchscript_exports_in_both_modes_with_preprocessing(toy, tmp_path, mode) -> None:
    from decola_core.export.runtime import ExportedDetector

    _, _, model = toy
    out = tmp_path / f"toy_{mode}.pt"
    spec = ExportSpec(
        format="torchscript", mode=mode, image_size=(112, 144), with_preprocess=True,
        embeddings_input=mode == "conditioned", max_detections=30,
    )  # fmt: skip
    _, meta = export_model(model, spec, out)
    assert meta["parity"]["passed"] and out.is_file()
    assert meta["inputs"]["images"]["dtype"] == "uint8"
    assert meta["inputs"]["images"]["shape"] == [1, 112, 144, 3]
    names = ["images", "prompt_ids", "embeddings"] if mode == "conditioned" else ["images"]
    assert list(meta["inputs"]) == names
    runner = ExportedDetector(out)
    image = torch.randint(0, 256, (3, 112, 144), dtype=torch.uint8)
    if mode == "conditioned":
        with pytest.raises(InputError, match="vocabulary as an input"):
            runner.detect([image], [(112, 144)], prompt_ids=torch.tensor([0, 2]))
        runner.set_vocabulary(model.class_embed[-1].zs_weight[:8])
        dets = runner.detect([image], [(112, 144)], prompt_ids=torch.tensor([0, 2]))[0]
        expected = model.detect([image], [(112, 144)], prompt_ids=torch.tensor([0, 2]),
                                max_detections=30)[0]  # fmt: skip
        assert set(dets.labels.tolist()) <= {0, 2}
    else:
        dets = runner.detect([image], [(112, 144)])[0]
        expected = model.detect([image], [(112, 144)], max_detections=30)[0]
    torch.testing.assert_close(dets.scores, expected.scores, rtol=1e-4, atol=1e-5)


def test_the_boxsup_baseline_exports_in_object_mode(toy, tmp_path) -> None:
    from decola_core.export.runtime import ExportedDetector

    torch.manual_seed(0)
    model = build_model(load_recipe("toy/BoxSup-DeformDETR_Toy"), data_root=toy[0]).eval()
    spec = ExportSpec(format="torchscript", image_size=(96, 128), max_detections=30)
    path, meta = export_model(model, spec, tmp_path / "boxsup.pt")
    assert meta["parity"]["passed"] and meta["architecture"] == "deformable_detr"
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    dets = ExportedDetector(path).detect([image], [(96, 128)])[0]
    expected = model.detect([image], [(96, 128)], max_detections=30)[0]
    torch.testing.assert_close(dets.scores, expected.scores, rtol=1e-4, atol=1e-5)
    # a random model's near-tied scores may come in either order: the same labels overall
    assert sorted(dets.labels.tolist()) == sorted(expected.labels.tolist())


def test_failed_parity_and_unsupported_exports_leave_no_file(toy, tmp_path, monkeypatch) -> None:
    _, _, model = toy
    spec = ExportSpec(format="torchscript", image_size=(96, 96), max_detections=30)
    monkeypatch.setattr(exporter, "compare_outputs", lambda *a, **k: (50.0, 0.5, False))
    with pytest.raises(DecolaError, match="differs from PyTorch beyond the tolerance"):
        export_model(model, spec, tmp_path / "bad.pt")
    assert not list(tmp_path.iterdir())  # no file, no metadata, no temporary
    monkeypatch.undo()
    with pytest.raises(InputError, match="needs opset 16 or newer"):
        export_model(model, ExportSpec(opset=13), tmp_path / "old.onnx")
    with pytest.raises(InputError, match="one image size"):
        export_model(model, ExportSpec(format="torchscript", image_size=None), tmp_path / "a.pt")
    c2 = build_model(load_recipe("toy/BoxSup-C2_Toy"), data_root=toy[0])
    with pytest.raises(InputError, match="not centernet2"):
        export_model(c2, ExportSpec(format="torchscript", image_size=(96, 96)), tmp_path / "c.pt")
    boxsup = build_model(load_recipe("toy/BoxSup-DeformDETR_Toy"), data_root=toy[0])
    with pytest.raises(InputError, match="no class mode"):
        export_model(boxsup, ExportSpec(format="torchscript", mode="conditioned"), tmp_path / "d")
    assert not list(tmp_path.iterdir())


def test_without_onnx_installed_the_command_says_what_to_install(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.startswith("onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(InputError, match=r'pip install "decola\[export\]"'):
        exporter.require_onnx()


def test_export_errors_are_one_line(decola, toy, tmp_path) -> None:
    data_root, weights, _ = toy
    result = decola(
        "export", "--weights", str(weights), "--data-root", str(data_root), "--dynamic",
        "--format", "torchscript", "--output", str(tmp_path / "x.pt"),
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "one image size" in lines[0], result.stderr
    result = decola(
        "predict", str(tmp_path / "x.png"), "--backend", "onnx", "--weights", str(weights),
    )  # fmt: skip
    assert result.returncode == 2 and "--backend onnx runs --model FILE" in result.stderr


@pytest.fixture(scope="module")
def golden(reference_dir: Path):
    """The reference small DECOLA phase-1 model (shared/reference) and its golden images."""
    from decola_core.config.importer import import_original

    recipe = import_original(reference_dir / "golden_phase1_small.yaml").recipe
    model = build_model(recipe, data_root=reference_dir)
    load_weights(model, reference_dir / "golden_phase1_small.pth")
    images = torch.load(reference_dir / "golden_inputs.pt")["images"]
    return model.eval(), images


@pytest.mark.reference
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("mode", ["object", "conditioned"])
def test_the_reference_model_exports_in_both_modes_and_formats(golden, tmp_path, fmt, mode):
    """Exported at the first golden image's size, then run on that image (not only on the
    random inputs of the parity check) against eager PyTorch."""
    model, images = golden
    image = images[0]
    size = tuple(int(v) for v in image.shape[1:])
    spec = ExportSpec(format=fmt, mode=mode, image_size=size, max_detections=100)
    path, meta = export_model(model, spec, tmp_path / f"golden.{fmt}")
    assert meta["parity"]["passed"], meta["parity"]
    graph = exporter.DetectionGraph(model, mode=mode, max_detections=100)
    pixels = image.to(torch.uint8).permute(1, 2, 0)[None]
    inputs = [graph.normalise(pixels)]
    if mode == "conditioned":
        inputs.append(torch.tensor([0, 5, 17]))
    inputs = tuple(inputs)
    with torch.no_grad():
        eager = [t.numpy() for t in graph(*inputs)]
    exported = exporter.run_exported(path, fmt, inputs, graph.input_names())
    box_diff, score_diff, matched = exporter.compare_outputs(eager, exported)
    assert matched and score_diff <= 1e-4 and box_diff <= 1e-4 * max(size)
