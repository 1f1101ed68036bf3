"""The bad-input and fault table of the README's reliability section: one test per row, each
checking what happens (a one-line error with exit status 2, a count, a fallback) and that no
output is lost or half-written."""

from __future__ import annotations

import errno
import io
import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decola_core.data.images import UnreadableImage, read_image
from decola_core.engine.checkpointer import POINTER, Checkpointer
from decola_core.errors import DecolaError
from decola_core.utils.io import atomic_open, atomic_write_text


def one_line_error(result) -> str:
    """The run failed with status 2 and one error line, the last, and no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert errors == lines[-1:] and "Traceback" not in result.stderr, result.stderr
    return errors[0]


@pytest.fixture()
def chain_files(tmp_path: Path) -> Path:
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 50, "width": 60} for i in (1, 2)]
    info = {"images": images, "categories": [{"id": 3, "name": "cup"}], "annotations": []}
    (tmp_path / "info.json").write_text(json.dumps(info))
    return tmp_path


def convert_args(folder: Path, predictions: Path, output: Path | None = None) -> list[str]:
    info, out = folder / "info.json", output or folder / "out.json"
    return ["convert", "--predictions", str(predictions), "--image-info", str(info),
            "--output", str(out), "--cache-dir", str(folder / "c")]  # fmt: skip


def test_truncated_json_is_one_line_naming_the_file(decola, chain_files: Path) -> None:
    bad = chain_files / "trunc.json"
    bad.write_text('[{"image_id": 1, "category_id": 3, "bbox": [1, 2')
    line = one_line_error(decola(*convert_args(chain_files, bad)))
    assert "trunc.json" in line
    assert not (chain_files / "out.json").exists()


def test_json_of_the_wrong_shape_is_one_line(decola, chain_files: Path) -> None:
    bad = chain_files / "shape.json"
    bad.write_text(json.dumps({"image_id": 1}))
    assert "shape.json" in one_line_error(decola(*convert_args(chain_files, bad)))


def test_boxes_of_negative_size_are_refused_or_skipped_and_counted(decola, chain_files) -> None:
    records = [
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, -4, 10], "score": 0.8},
        {"image_id": 2, "category_id": 3, "bbox": [5, 5, 10, -1], "score": 0.7},
        {"image_id": 2, "category_id": 3, "bbox": [5, 5, 0, 0], "score": 0.6},  # empty: kept
    ]
    source = chain_files / "preds.json"
    source.write_text(json.dumps(records))
    line = one_line_error(decola(*convert_args(chain_files, source)))
    assert "2 boxes with NaN or negative size" in line and "--skip-invalid" in line
    assert not (chain_files / "out.json").exists()
    kept = decola(*convert_args(chain_files, source), "--skip-invalid")
    assert kept.returncode == 0, kept.stderr
    assert "dropped 2 boxes" in kept.stderr and "wrote 2 boxes" in kept.stderr


def test_unknown_image_or_category_ids_are_refused(decola, chain_files: Path) -> None:
    source = chain_files / "preds.json"
    source.write_text(
        json.dumps([{"image_id": 9, "category_id": 3, "bbox": [1, 1, 2, 2], "score": 1}])
    )
    assert "9" in one_line_error(decola(*convert_args(chain_files, source)))
    source.write_text(
        json.dumps([{"image_id": 1, "category_id": 8, "bbox": [1, 1, 2, 2], "score": 1}])
    )
    assert "8" in one_line_error(decola(*convert_args(chain_files, source)))


def test_an_empty_annotation_file_is_one_line(decola, chain_files: Path) -> None:
    empty = chain_files / "empty.json"
    empty.write_bytes(b"")
    preds = chain_files / "preds.json"
    preds.write_text("[]")
    line = one_line_error(decola("eval", "--predictions", str(preds), "--annotations", str(empty)))
    assert "empty.json" in line


# ---- image files --------------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (and whose data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"x") + chunk(b"IEND", b"")


def test_image_files_that_cannot_be_decoded_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    whole = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(whole, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.getvalue()[:120])
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(50_000, 50_000))
    for path, reason in ((empty, "cannot decode"), (truncated, "cannot decode"),
                         (huge, "2500000000 pixels.*refusing to decode")):  # fmt: skip
        with pytest.raises(UnreadableImage, match=reason) as caught:
            read_image(path)
        assert str(path) in str(caught.value) and isinstance(caught.value, OSError)


def test_grayscale_cmyk_16_bit_and_exif_images_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (5, 4), 77).save(tmp_path / "gray.png")
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (3, 4, 5) and gray.dtype == torch.uint8 and int(gray.max()) == 77
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (3, 4, 5) and cmyk[0].float().mean() > 200 > cmyk[1].float().mean()
    deep = np.array([[65535, 256], [0, 32768]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png")[0].tolist() == [[255, 1], [0, 128]]
    rotated = Image.new("RGB", (6, 2))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated.save(tmp_path / "exif.jpg", exif=exif)
    assert read_image(tmp_path / "exif.jpg").shape == (3, 6, 2)
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    assert read_image(tmp_path / "dot.png").shape == (3, 1, 1)


def test_a_one_pixel_image_is_resized_and_a_too_small_input_is_advice(
    decola, toy_model, tmp_path
) -> None:
    data_root, bare, _ = toy_model
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    args = ("predict", str(tmp_path / "dot.png"), "--weights", str(bare),
            "--config", "toy/DECOLA_PHASE1_Toy", "--data-root", str(data_root),
            "--classes", "red_square", "--output-dir", str(tmp_path / "out"))  # fmt: skip
    result = decola(*args)  # resized to the recipe's test size like any other image
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "dot.json").read_text())
    assert (record["height"], record["width"]) == (1, 1)
    small = decola(*args, "--set", "test.min_size=8", "--set", "test.max_size=8")
    assert "per_prompt_topk" in one_line_error(small)  # too few encoder tokens: the advice


# ---- outputs ---------------------------------------------------------------------------------


def test_an_unwritable_output_folder_is_one_line(decola, chain_files: Path) -> None:
    source = chain_files / "preds.json"
    source.write_text(
        json.dumps([{"image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2], "score": 1}])
    )
    blocker = chain_files / "a_file"
    blocker.write_text("not a folder")
    line = one_line_error(decola(*convert_args(chain_files, source, blocker / "out.json")))
    assert "cannot write" in line and "a_file" in line


def test_a_full_disk_leaves_the_previous_file_and_no_partial_output(tmp_path, monkeypatch) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("previous\n")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", no_space)
    with pytest.raises(DecolaError, match="No space left on device; nothing was changed"):
        atomic_write_text(target, "new\n" * 1000)
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    with (
        pytest.raises(DecolaError, match="No space left"),
        atomic_open(tmp_path / "x.bin", "wb") as h,
    ):
        h.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# ---- checkpoints -----------------------------------------------------------------------------


def _checkpoints(folder: Path) -> Checkpointer:
    checkpointer = Checkpointer(folder)
    for iteration in (3, 6):
        checkpointer.save(f"model_{iteration:07d}.pth", {"iteration": iteration})
    return checkpointer


def test_a_kill_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path) -> None:
    checkpointer = _checkpoints(tmp_path)
    partial = tmp_path / ".model_0000009.pth.k2j3.tmp"  # what a kill mid-write leaves
    partial.write_bytes(b"PK\x03\x04 half a checkpoint")
    pointer = tmp_path / f".{POINTER}.x8q1.tmp"  # a kill while the pointer was written
    pointer.write_text("model_0000009.pth")
    path, state = checkpointer.load_latest()
    assert path.name == "model_0000006.pth" and state["iteration"] == 6
    assert not partial.exists() and not pointer.exists()


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog) -> None:
    checkpointer = _checkpoints(tmp_path)
    (tmp_path / "model_0000006.pth").write_bytes(b"garbage")
    assert (tmp_path / POINTER).read_text().strip() == "model_0000006.pth"
    with caplog.at_level(logging.WARNING, logger="decola_core"):
        path, state = checkpointer.load_latest()
    assert path.name == "model_0000003.pth" and state["iteration"] == 3
    assert "model_0000006.pth: cannot read the checkpoint" in caplog.text
    assert "resuming from" in caplog.text and "model_0000003.pth" in caplog.text
