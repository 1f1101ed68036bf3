"""Class-name CLIP embeddings: encoder parity, file order, cache, custom vocabularies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


def test_encoder_matches_open_clip_at_full_context(tiny_clip) -> None:
    from decola_core.text import ClipTextEncoder

    config, weights = tiny_clip
    encoder = ClipTextEncoder(str(config), weights)
    prompts = ["a cola", "a aerosol_can", "a very long name of a thing with many many words"]
    full = encoder.model.encode_text(encoder.tokenizer(prompts)).detach().numpy()
    out = encoder.encode(prompts, batch_size=2)
    assert out.shape == (3, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, full, atol=1e-5)
    loaded = torch.load(weights)
    assert torch.equal(encoder.model.state_dict()["text_projection"], loaded["text_projection"])


def test_embed_command_rows_follow_category_ids(decola, tiny_clip, tmp_path: Path) -> None:
    from decola_core.text import ClipTextEncoder

    config, weights = tiny_clip
    lvis = tmp_path / "lvis.json"
    lvis.write_text(json.dumps({"categories": [{"id": 3, "name": "table"},
                                               {"id": 1, "name": "aerosol_can"},
                                               {"id": 2, "name": "fork"}]}))  # fmt: skip
    out, obj = tmp_path / "emb.npy", tmp_path / "obj.npy"
    result = decola(
        "data", "embed", "--annotations", str(lvis), "--clip-weights", str(weights),
        "--model", str(config), "-o", str(out), "--object-output", str(obj),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    encoder = ClipTextEncoder(str(config), weights)
    expected = encoder.encode(["a aerosol_can", "a fork", "a table"])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
    np.testing.assert_allclose(np.load(obj), encoder.encode(["a object"]), atol=1e-5)

    both = decola("data", "embed", "--annotations", str(lvis), "--names", str(lvis),
                  "--clip-weights", str(weights), "-o", str(out))  # fmt: skip
    assert both.returncode != 0 and "exactly one of --names" in both.stderr


def test_vocabulary_cache_hits_by_model_weights_template_and_names(tiny_clip, tmp_path) -> None:
    from decola_core.text import vocabulary_embeddings

    config, weights = tiny_clip
    kwargs = {"model": str(config), "cache_dir": tmp_path}
    first, hit = vocabulary_embeddings(["cola", "fork"], weights, **kwargs)
    assert not hit and first.shape == (2, 64)
    again, hit = vocabulary_embeddings(["cola", "fork"], weights, **kwargs)
    assert hit and np.array_equal(again, first)
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1
    _, hit = vocabulary_embeddings(["cola", "fork"], weights, template="a photo of a {}", **kwargs)
    assert not hit
    _, hit = vocabulary_embeddings(["fork", "cola"], weights, **kwargs)
    assert not hit


def test_predict_with_a_custom_vocabulary(decola, tiny_clip, toy_model, tmp_path: Path) -> None:
    config, weights = tiny_clip
    data_root, _, model_file = toy_model
    image = data_root / "toy" / "images" / "toy_val_0000.png"
    args = (
        "predict", str(image), "--weights", str(model_file),
        "--data-root", str(data_root), "--cache-dir", str(tmp_path / "cache"),
        "--vocabulary", "custom", "--classes", "cola,tiny fork", "--clip-weights", str(weights),
        "--clip-model", str(config), "--threshold", "0", "--max-dets", "6",
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    first = decola(*args)
    assert first.returncode == 0, first.stderr
    assert "(embedded)" in first.stderr
    found = json.loads((tmp_path / "out" / "toy_val_0000.json").read_text())["detections"]
    assert len(found) == 6 and {d["class_name"] for d in found} <= {"cola", "tiny fork"}
    second = decola(*args)
    assert second.returncode == 0 and "(cached)" in second.stderr


def test_vocabulary_width_must_match_the_model() -> None:
    from decola_core.modeling.classifier import PromptClassifier, set_vocabulary

    classifier = PromptClassifier(8, torch.randn(4, 16), torch.ones(3))
    with pytest.raises(ValueError, match=r"expects \(N, 16\)"):
        set_vocabulary(classifier, torch.randn(2, 32))
    set_vocabulary(classifier, torch.randn(5, 16))
    assert classifier.num_classes == 5 and classifier.zs_weight.shape == (6, 16)


def test_detector_api_takes_a_custom_vocabulary(tiny_clip, toy_model, tmp_path: Path) -> None:
    from decola_core import Detector

    config, weights = tiny_clip
    data_root, _, model_file = toy_model
    detector = Detector.from_pretrained(model_file, data_root=data_root)
    image = data_root / "toy" / "images" / "toy_val_0000.png"
    before = detector.detect(image, threshold=0.0)
    detector.set_vocabulary(["cola", "fork", "kite"], weights, clip_model=str(config),
                            cache_dir=tmp_path / "cache")  # fmt: skip
    assert detector.class_names == ["cola", "fork", "kite"]
    found = detector.detect(image, classes=["kite"], threshold=0.0, max_detections=5)
    assert len(found) == 5 and set(found.names) == {"kite"}
    general = detector.detect(image, threshold=0.0)
    assert set(general.names) <= {"cola", "fork", "kite"}
    assert not torch.equal(general.scores[:10], before.scores[:10])
