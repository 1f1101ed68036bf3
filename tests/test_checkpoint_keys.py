"""Released checkpoints' key lists map 1:1 onto native models built from the matching recipes
(built on the meta device, so this is fast), and the loader's key maps for other formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from decola_core.config import load_recipe
from decola_core.modeling import build_model, load_weights
from decola_core.modeling.checkpoint import to_native

PHASE1 = "DECOLA_PHASE1_Lbase_CLIP_R5021k_4x"
PHASE2 = "DECOLA_PHASE2_LbaseI_CLIP_R5021k_4x_ft4x"
KEY_FILES = {
    f"keys_{PHASE1}.json": PHASE1,
    f"keys_{PHASE2}.json": PHASE2,
    f"keys_{PHASE2}_after_forward.json": PHASE2,
    "keys_DECOLA_PHASE1_Lbase_CLIP_SwinB_4x.json": "DECOLA_PHASE1_Lbase_CLIP_SwinB_4x",
    "keys_BoxSup-DeformDETR_Lbase_CLIP_R5021k_4x.json": "BoxSup-DeformDETR_Lbase_CLIP_R5021k_4x",
}


@pytest.mark.reference
@pytest.mark.parametrize("key_file", sorted(KEY_FILES))
def test_released_keys_map_one_to_one(reference_dir: Path, key_file: str) -> None:
    data = json.loads((reference_dir / key_file).read_text())
    with torch.device("meta"):
        model = build_model(load_recipe(KEY_FILES[key_file]), data_root=reference_dir)
    state = {
        k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        for k, shape, dtype in data["keys"]
    }
    native, fmt, dropped = to_native(state)
    own = model.state_dict()
    assert fmt == "detectron2"
    assert sorted(native) == sorted(own)
    for key, value in native.items():
        assert tuple(value.shape) == tuple(own[key].shape), key
    student_counters = [k for k in data["d2_version_dependent_keys"] if k.startswith("detr.")]
    assert dropped["num_batches_tracked"] == len(student_counters)
    if "after_forward" in key_file:
        assert dropped["teacher (pseudo_detr)"] == sum(
            k.startswith("pseudo_detr.") for k, *_ in data["keys"]
        )


def test_timm_resnet_file_maps_onto_the_backbone(tmp_path: Path) -> None:
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        source.conv1.weight.fill_(0.5)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)  # timm/torchvision layout, with fc.*
    native, fmt, dropped = to_native(torch.load(path))
    assert fmt == "resnet" and dropped["classifier head"] == 2
    assert "backbone.0.backbone.base.layer1.0.conv1.weight" in native
    assert all(k.startswith("backbone.0.backbone.base.") for k in native)


def test_swin_file_maps_onto_the_backbone() -> None:
    state = {
        "patch_embed.proj.weight": torch.zeros(1),
        "layers.0.blocks.0.attn.attn_mask": torch.zeros(1),
        "head.weight": torch.zeros(1),
        "norm.weight": torch.zeros(1),
        "layers.0.blocks.0.norm1.weight": torch.zeros(1),
    }
    native, fmt, dropped = to_native(state)
    assert fmt == "swin" and dropped["classifier head"] == 3
    assert sorted(native) == [
        "backbone.0.backbone.layers.0.blocks.0.norm1.weight",
        "backbone.0.backbone.patch_embed.proj.weight",
    ]


def test_bad_weight_files_are_clear_errors(tmp_path: Path) -> None:
    from decola_core.errors import DecolaError

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    model = torch.nn.Linear(2, 2)
    with pytest.raises(DecolaError, match="cannot read weights"):
        load_weights(model, bad)
    with pytest.raises(DecolaError, match="not found"):
        load_weights(model, tmp_path / "missing.pth")
    torch.save({"model": {"weight": "text"}}, tmp_path / "odd.pth")
    with pytest.raises(DecolaError):
        load_weights(model, tmp_path / "odd.pth")
