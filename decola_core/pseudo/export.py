"""Pseudo-boxes out of decola: a pseudo-annotation file (LVIS format, as ``decola dedup`` writes
it) as a COCO JSON, or as a YOLO label folder.

YOLO layout (Ultralytics): ``labels/<image path>.txt`` with one ``class cx cy w h`` line per box
(coordinates divided by the image's width and height), an empty file for an image without
boxes, ``classes.txt`` (one name per line; the line number is the class index, in category-id
order) and ``data.yaml`` (``names``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from decola_core.utils.io import atomic_write_text, read_json_file

ExportFormat = Literal["coco", "yolo"]


def export_pseudo_labels(source: Path, output: Path, fmt: ExportFormat) -> Path:
    """Write ``source`` as ``fmt`` at ``output`` (a JSON file for COCO, a folder for YOLO)."""
    data = read_json_file(source, "pseudo-label file")
    if fmt == "coco":
        return write_coco(data, output)
    if fmt == "yolo":
        return write_yolo(data, output)
    raise ValueError(f"unknown export format {fmt!r} (coco or yolo)")


def write_coco(data: dict, output: Path) -> Path:
    """A COCO detection file: images, categories (id, name, and LVIS's ``frequency`` when the
    source has it, so decola still scores rare classes apart) and the boxes with their scores
    (``iscrowd`` 0, ``area`` = w x h)."""
    images = [{k: i[k] for k in ("id", "file_name", "height", "width")} for i in data["images"]]
    categories = [
        {k: c[k] for k in ("id", "name", "frequency") if k in c} for c in data["categories"]
    ]
    annotations = []
    for n, a in enumerate(data["annotations"], start=1):
        x, y, w, h = a["bbox"]
        annotations.append(
            {
                "id": n,
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
                **({"score": a["score"]} if "score" in a else {}),
            }
        )
    coco = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(output, json.dumps(coco) + "\n")
    return output


def write_yolo(data: dict, folder: Path) -> Path:
    """The YOLO label folder (see the module docstring)."""
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    lines: dict[int, list[str]] = {img["id"]: [] for img in data["images"]}
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    for a in data["annotations"]:
        width, height = sizes[a["image_id"]]
        x, y, w, h = a["bbox"]
        cx, cy = (x + w / 2) / width, (y + h / 2) / height
        row = f"{index[a['category_id']]} {cx:.6f} {cy:.6f} {w / width:.6f} {h / height:.6f}"
        lines[a["image_id"]].append(row)
    labels = folder / "labels"
    for img in data["images"]:
        target = (labels / img["file_name"]).with_suffix(".txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, "".join(f"{row}\n" for row in lines[img["id"]]))
    names = [c["name"] for c in categories]
    atomic_write_text(folder / "classes.txt", "".join(f"{n}\n" for n in names))
    yaml_names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(names))
    atomic_write_text(folder / "data.yaml", f"path: .\nnames:\n{yaml_names}")
    return folder
