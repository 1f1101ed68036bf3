"""``decola predict --masks sam``: every box of a box-only detector gets a Segment Anything
mask prompted with it. A stand-in ``segment_anything`` package (same API, no weights) takes the
place of the real one: its "mask" of a box is the box's inner half, so the masks decoded from
the output must be exactly those."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

TOY = "toy/DECOLA_PHASE1_Toy"

STAND_IN = """
import numpy as np
import torch


class _Transform:
    def apply_boxes_torch(self, boxes, original_size):
        self.seen = original_size
        return boxes * 2  # SAM works on a resized copy; the stand-in at twice the size


class _Sam:
    def __init__(self, checkpoint):
        torch.load(checkpoint, weights_only=True)  # a real (tiny) file must be given
        self.device = torch.device("cpu")

    def to(self, device):
        return self

    def eval(self):
        return self


sam_model_registry = {name: (lambda checkpoint=None: _Sam(checkpoint))
                      for name in ("default", "vit_h", "vit_l", "vit_b")}


class SamPredictor:
    def __init__(self, model):
        self.model, self.transform, self.device = model, _Transform(), model.device

    def set_image(self, image, image_format="RGB"):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.size = image.shape[:2]

    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None,
                      multimask_output=True, return_logits=False):
        assert point_coords is None and not multimask_output
        h, w = self.size
        masks = torch.zeros((len(boxes), 1, h, w), dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate((boxes / 2).tolist()):
            cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
            masks[i, 0, int(cy - bh):int(cy + bh) + 1, int(cx - bw):int(cx + bw) + 1] = True
        return masks, torch.ones(len(boxes), 1), torch.zeros(len(boxes), 1, 256, 256)
"""


def inner_half(box, size) -> np.ndarray:
    h, w = size
    mask = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
    mask[int(cy - bh) : int(cy + bh) + 1, int(cx - bw) : int(cx + bw) + 1] = True
    return mask


@pytest.fixture()
def stand_in(tmp_path: Path) -> dict[str, str]:
    package = tmp_path / "site" / "segment_anything"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(STAND_IN))
    return {"PYTHONPATH": str(tmp_path / "site")}


def test_sam_masks_for_a_detr_model(decola, toy_model, stand_in, tmp_path: Path) -> None:
    from pycocotools import mask as mask_util

    data_root, bare, _ = toy_model
    checkpoint = tmp_path / "sam_vit_b_tiny.pth"
    torch.save({"w": torch.zeros(1)}, checkpoint)
    image = data_root / "toy" / "images" / "toy_val_0000.png"
    out = tmp_path / "out"
    common = ["predict", str(image), "--config", TOY, "--weights", str(bare),
              "--data-root", str(data_root), "--threshold", "0", "--max-dets", "5"]  # fmt: skip
    result = decola(*common, "--masks", "sam", "--sam-checkpoint", str(checkpoint),
                    "--output-dir", str(out), env=stand_in)  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "toy_val_0000.json").read_text())
    size = (record["height"], record["width"])
    assert len(record["detections"]) == 5
    for d in record["detections"]:
        mask = mask_util.decode(d["mask"]).astype(bool)
        box = d["box_xyxy"]
        expected = inner_half(box, size)
        # boxes in the JSON are rounded to 2 decimals: compare away from the cut lines
        assert (mask != expected).mean() < 0.01 and d["mask_area"] == int(mask.sum())
    plain = decola(*common, "--output-dir", str(tmp_path / "plain"), env=stand_in)
    assert plain.returncode == 0, plain.stderr
    found = json.loads((tmp_path / "plain" / "toy_val_0000.json").read_text())["detections"]
    assert all("mask" not in d for d in found)  # a DETR model has no masks of its own


def test_sam_errors_are_one_line(decola, toy_model, tmp_path: Path) -> None:
    data_root, bare, _ = toy_model
    image = data_root / "toy" / "images" / "toy_val_0000.png"
    common = ["predict", str(image), "--config", TOY, "--weights", str(bare),
              "--data-root", str(data_root), "--output-dir", str(tmp_path / "out"),
              "--masks", "sam"]  # fmt: skip
    missing = decola(*common)
    assert missing.returncode == 2 and "needs --sam-checkpoint" in missing.stderr
    unnamed = tmp_path / "weights.pth"
    torch.save({}, unnamed)
    vague = decola(*common, "--sam-checkpoint", str(unnamed))
    assert vague.returncode == 2 and "--sam-model" in vague.stderr
    broken = tmp_path / "site" / "segment_anything"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('not installed')\n")
    absent = decola(*common, "--sam-checkpoint", str(unnamed), "--sam-model", "vit_b",
                    env={"PYTHONPATH": str(tmp_path / "site")})  # fmt: skip
    assert absent.returncode == 2 and "pip install 'decola[sam]'" in absent.stderr
    for result in (missing, vague, absent):
        assert "Traceback" not in result.stderr
