"""The built-in synthetic toy dataset: coloured shapes on textured backgrounds, LVIS-format.

Generated deterministically into ``<data root>/toy/`` on first use: train and val splits with
boxes and polygon masks, an image-labelled split (``pos_category_ids`` only), 8 categories with
LVIS frequency tags (2 rare = "novel"), and CLIP-like class embeddings in which classes
sharing a colour or a shape have similar vectors, so the zero-shot classifier has structure to
learn from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from decola_core.utils.io import atomic_open, atomic_write_text

VERSION = 2  # 2: polygon segmentations
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 210, 40),
}
SHAPES = ("square", "circle", "triangle")
CLASSES = [
    ("red", "square"),
    ("green", "circle"),
    ("blue", "triangle"),
    ("yellow", "square"),
    ("red", "circle"),
    ("green", "triangle"),
    ("blue", "square"),
    ("yellow", "circle"),
]
FREQUENCY = ["f", "f", "f", "c", "c", "c", "r", "r"]
EMBED_DIM = 64
SPLITS = {"toy_train": (96, True), "toy_val": (32, True), "toy_image_labels": (64, False)}


def ensure_toy_dataset(data_root: str | Path) -> Path:
    """Generate the toy set under ``data_root/toy`` unless the current version is there."""
    root = Path(data_root) / "toy"
    marker = root / "VERSION"
    if marker.is_file() and marker.read_text().strip() == str(VERSION):
        return root
    rng = np.random.default_rng(2024)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": i + 1, "name": f"{c}_{s}", "synonyms": [f"{c} {s}"], "frequency": FREQUENCY[i]}
        for i, (c, s) in enumerate(CLASSES)
    ]
    counts = np.zeros(len(CLASSES), np.int64)
    for split, (num_images, with_boxes) in SPLITS.items():
        images, annotations = [], []
        for i in range(num_images):
            name = f"{split}_{i:04d}.png"
            image, objects = _draw_image(rng)
            _save_png(image, root / "images" / name)
            h, w = image.shape[:2]
            entry = {
                "id": i + 1,
                "file_name": name,
                "height": h,
                "width": w,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            }
            present = sorted({cls for cls, _ in objects})
            if with_boxes:
                absent = [c for c in range(len(CLASSES)) if c not in present]
                entry["neg_category_ids"] = [
                    int(c) + 1 for c in rng.choice(absent, size=min(3, len(absent)), replace=False)
                ]
                for cls, (x, y, bw, bh) in objects:
                    polygon = shape_polygon(CLASSES[cls][1], x, y, bw)
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": i + 1,
                            "category_id": cls + 1,
                            "bbox": [x, y, bw, bh],
                            "area": round(_polygon_area(polygon), 2),
                            "segmentation": [polygon],
                            "iscrowd": 0,
                        }
                    )
                if split == "toy_train":
                    counts[present] += 1
            else:
                entry["pos_category_ids"] = [present[0] + 1]  # one image-level label, as ImageNet
            images.append(entry)
        cats = [{**c, "image_count": int(counts[k])} for k, c in enumerate(categories)]
        data = {
            "info": {"description": f"decola toy set v{VERSION}"},
            "images": images,
            "annotations": annotations,
            "categories": cats,
        }
        atomic_write_text(root / "annotations" / f"{split}.json", json.dumps(data))
    _write_embeddings(root, rng)
    atomic_write_text(marker, f"{VERSION}\n")
    return root


def _write_embeddings(root: Path, rng: np.random.Generator) -> None:
    colour = {c: rng.normal(size=EMBED_DIM) for c in COLOURS}
    shape = {s: rng.normal(size=EMBED_DIM) for s in SHAPES}
    rows = np.stack([colour[c] + shape[s] + 0.3 * rng.normal(size=EMBED_DIM) for c, s in CLASSES])
    obj = rng.normal(size=(1, EMBED_DIM))
    for name, array in (("toy_clip_a+cname.npy", rows), ("toy_clip_a+object.npy", obj)):
        with atomic_open(root / name, "wb") as handle:
            np.save(handle, (array * 4).astype(np.float16))


def _draw_image(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, tuple[float, ...]]]]:
    h, w = int(rng.integers(112, 161)), int(rng.integers(112, 161))
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(60, 180, 3)
    image = base + 30 * np.sin(
        xx[..., None] / rng.uniform(8, 20) + yy[..., None] / rng.uniform(8, 20)
    )
    image = np.clip(image + rng.normal(0, 12, (h, w, 3)), 0, 255)
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(len(CLASSES)))
        colour, shape = CLASSES[cls]
        size = float(rng.uniform(20, min(h, w) / 2))
        x0, y0 = float(rng.uniform(0, w - size)), float(rng.uniform(0, h - size))
        mask = _shape_mask(shape, xx, yy, x0, y0, size)
        image[mask] = np.array(COLOURS[colour]) + rng.normal(0, 8, 3)
        objects.append((cls, (round(x0, 2), round(y0, 2), round(size, 2), round(size, 2))))
    return image.astype(np.uint8), objects


def _shape_mask(shape: str, xx, yy, x0: float, y0: float, size: float) -> np.ndarray:
    if shape == "square":
        return (xx >= x0) & (xx < x0 + size) & (yy >= y0) & (yy < y0 + size)
    cx, cy, r = x0 + size / 2, y0 + size / 2, size / 2
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    inside = (yy >= y0) & (yy < y0 + size)
    half = (yy - y0) / size * r  # widens from the apex down
    return inside & (np.abs(xx - cx) <= half)


def shape_polygon(shape: str, x0: float, y0: float, size: float) -> list[float]:
    """The outline of a drawn shape as a COCO polygon (flat x, y; a circle as 24 points)."""
    if shape == "square":
        corners = [(x0, y0), (x0 + size, y0), (x0 + size, y0 + size), (x0, y0 + size)]
    elif shape == "circle":
        r = size / 2
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        corners = [(x0 + r + r * np.cos(a), y0 + r + r * np.sin(a)) for a in angles]
    else:  # the apex at the top centre, the base along the bottom edge
        corners = [(x0 + size / 2, y0), (x0 + size, y0 + size), (x0, y0 + size)]
    return [round(float(v), 2) for xy in corners for v in xy]


def _polygon_area(polygon: list[float]) -> float:
    x, y = np.array(polygon[0::2]), np.array(polygon[1::2])
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_open(path, "wb") as handle:
        Image.fromarray(image).save(handle, format="PNG")


def recipe_uses_toy_data(recipe) -> bool:
    """Whether the recipe reads the toy set (its data sets or its class-embedding files)."""
    names = [d.name for d in recipe.data.train] + list(recipe.data.test)
    files = (recipe.model.classifier.embeddings, recipe.model.classifier.category_info)
    return any(n.startswith("toy") for n in names) or any(f.startswith("toy/") for f in files)
