"""The built-in synthetic toy dataset: coloured shapes on textured backgrounds, LVIS-format.

Generated deterministically into ``<data root>/toy/`` on first use: train and val splits with
boxes and polygon masks, an image-labelled split (``pos_category_ids`` only), 8 categories with
LVIS frequency tags (2 rare = "novel"), and CLIP-like class embeddings in which classes
sharing a colour or a shape have similar vectors, so the zero-shot classifier has structure to
learn from. ``<split>_tags.csv`` lists the classes in each picture (``decola self-label
--tags``). The crowded variant (``toy_crowded``) has 16 classes, 6-9 shapes per image and no
training boxes for its rare classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decola_core.utils.io import atomic_open, atomic_write_text

VERSION = 4  # 2: polygon segmentations; 3: shapes never overlap; 4: tags files
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 210, 40),
}
SHAPES = ("square", "circle", "triangle", "diamond")
EMBED_DIM = 64


@dataclass(frozen=True)
class ToyVariant:
    """One generated set: its classes (colour, shape) with LVIS frequency tags, how many
    non-overlapping shapes an image holds and how large, and its splits (images, with boxes)."""

    name: str  # the folder under the data root and the prefix of its catalog sets
    classes: tuple[tuple[str, str], ...]
    frequency: tuple[str, ...]
    objects_per_image: tuple[int, int]  # inclusive range
    object_size: tuple[float, float]  # the upper bound is also capped at half the short side
    image_size: tuple[int, int]  # inclusive range of heights and widths
    splits: dict[str, tuple[int, bool]]
    base_only_train: bool = False  # drop rare-class boxes from the train split (LVIS-base)
    seed: int = 2024


TOY = ToyVariant(
    name="toy",
    classes=(
        ("red", "square"),
        ("green", "circle"),
        ("blue", "triangle"),
        ("yellow", "square"),
        ("red", "circle"),
        ("green", "triangle"),
        ("blue", "square"),
        ("yellow", "circle"),
    ),
    frequency=("f", "f", "f", "c", "c", "c", "r", "r"),
    objects_per_image=(2, 4),
    object_size=(20.0, 80.0),
    image_size=(112, 160),
    splits={"toy_train": (96, True), "toy_val": (32, True), "toy_image_labels": (64, False)},
)
# Many classes, several per image, rare classes unseen in training: where a fixed query budget
# shared by all classes (the baseline) and a budget per prompted class (DECOLA) differ.
TOY_CROWDED = ToyVariant(
    name="toy_crowded",
    classes=tuple((c, s) for s in SHAPES for c in COLOURS),
    # one rare class per colour and per shape, so each novel class combines a seen colour with
    # a seen shape: red_square, green_circle, blue_triangle, yellow_diamond
    frequency=tuple(
        "r" if i == j else ("c" if (i + j) % 2 else "f")
        for j in range(len(SHAPES))
        for i in range(len(COLOURS))
    ),
    objects_per_image=(6, 9),
    object_size=(16.0, 40.0),
    image_size=(144, 176),
    splits={"toy_crowded_train": (160, True), "toy_crowded_val": (48, True)},
    base_only_train=True,
    seed=2025,
)
VARIANTS = {v.name: v for v in (TOY, TOY_CROWDED)}
CLASSES = list(TOY.classes)  # the default set's classes, in category-id order


def variant_of(dataset_or_file: str) -> ToyVariant | None:
    """The toy variant a catalog set name (``toy_crowded_val``) or data path (``toy/...``) is
    part of, or None."""
    head = dataset_or_file.split("/", 1)[0]
    if head != dataset_or_file:  # a path: its first folder
        return VARIANTS.get(head)
    for variant in sorted(VARIANTS.values(), key=lambda v: -len(v.name)):
        if head == variant.name or head.startswith(variant.name + "_"):
            return variant
    return None


def ensure_toy_dataset(data_root: str | Path, variant: ToyVariant | str = TOY) -> Path:
    """Generate a toy set under ``data_root/<variant>`` unless the current version is there."""
    v = VARIANTS[variant] if isinstance(variant, str) else variant
    root = Path(data_root) / v.name
    marker = root / "VERSION"
    if marker.is_file() and marker.read_text().strip() == str(VERSION):
        return root
    rng = np.random.default_rng(v.seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": i + 1, "name": f"{c}_{s}", "synonyms": [f"{c} {s}"], "frequency": v.frequency[i]}
        for i, (c, s) in enumerate(v.classes)
    ]
    rare = {i for i, f in enumerate(v.frequency) if f == "r"}
    counts = np.zeros(len(v.classes), np.int64)
    for split, (num_images, with_boxes) in v.splits.items():
        is_train = split.endswith("_train")
        images, annotations, tags = [], [], []
        for i in range(num_images):
            name = f"{split}_{i:04d}.png"
            image, objects = _draw_image(rng, v)
            _save_png(image, root / "images" / name)
            names = sorted({categories[c]["name"] for c, _ in objects})
            tags.append(f"{name},{';'.join(names)}\n")
            if is_train and v.base_only_train:  # the shapes stay in the picture, unlabelled
                objects = [o for o in objects if o[0] not in rare]
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
                absent = [c for c in range(len(v.classes)) if c not in present]
                entry["neg_category_ids"] = [
                    int(c) + 1 for c in rng.choice(absent, size=min(3, len(absent)), replace=False)
                ]
                for cls, (x, y, bw, bh) in objects:
                    polygon = shape_polygon(v.classes[cls][1], x, y, bw)
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
                if is_train:
                    counts[present] += 1
            else:
                entry["pos_category_ids"] = [present[0] + 1]  # one image-level label, as ImageNet
            images.append(entry)
        cats = [{**c, "image_count": int(counts[k])} for k, c in enumerate(categories)]
        data = {
            "info": {"description": f"decola {v.name} set v{VERSION}"},
            "images": images,
            "annotations": annotations,
            "categories": cats,
        }
        atomic_write_text(root / "annotations" / f"{split}.json", json.dumps(data))
        # every class in each picture, also those whose boxes the split leaves out: the
        # image tags of decola self-label --tags
        atomic_write_text(root / f"{split}_tags.csv", "file,tags\n" + "".join(tags))
    _write_embeddings(root, rng, v)
    atomic_write_text(marker, f"{VERSION}\n")
    return root


def _write_embeddings(root: Path, rng: np.random.Generator, v: ToyVariant) -> None:
    colour = {c: rng.normal(size=EMBED_DIM) for c in COLOURS}
    shape = {s: rng.normal(size=EMBED_DIM) for s in SHAPES}
    rows = np.stack([colour[c] + shape[s] + 0.3 * rng.normal(size=EMBED_DIM) for c, s in v.classes])
    obj = rng.normal(size=(1, EMBED_DIM))
    files = ((f"{v.name}_clip_a+cname.npy", rows), (f"{v.name}_clip_a+object.npy", obj))
    for name, array in files:
        with atomic_open(root / name, "wb") as handle:
            np.save(handle, (array * 4).astype(np.float16))


def _draw_image(
    rng: np.random.Generator, v: ToyVariant
) -> tuple[np.ndarray, list[tuple[int, tuple[float, ...]]]]:
    lo, hi = v.image_size
    h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(60, 180, 3)
    image = base + 30 * np.sin(
        xx[..., None] / rng.uniform(8, 20) + yy[..., None] / rng.uniform(8, 20)
    )
    image = np.clip(image + rng.normal(0, 12, (h, w, 3)), 0, 255)
    objects: list[tuple[int, tuple[float, ...]]] = []
    for _ in range(int(rng.integers(v.objects_per_image[0], v.objects_per_image[1] + 1))):
        cls = int(rng.integers(len(v.classes)))
        colour, shape = v.classes[cls]
        placed = _place(rng, objects, h, w, v.object_size)
        if placed is None:
            continue
        x0, y0, size = placed
        mask = _shape_mask(shape, xx, yy, x0, y0, size)
        image[mask] = np.array(COLOURS[colour]) + rng.normal(0, 8, 3)
        objects.append((cls, (round(x0, 2), round(y0, 2), round(size, 2), round(size, 2))))
    return image.astype(np.uint8), objects


def _place(rng: np.random.Generator, objects, h: int, w: int, size_range, tries: int = 20):
    """A square (x0, y0, size) that overlaps no placed object's box, or None: shapes never
    occlude each other, so every box outlines all of its shape."""
    for _ in range(tries):
        size = float(rng.uniform(size_range[0], min(size_range[1], min(h, w) / 2)))
        x0, y0 = float(rng.uniform(0, w - size)), float(rng.uniform(0, h - size))
        if all(
            x0 >= bx + bw + 2 or bx >= x0 + size + 2 or y0 >= by + bh + 2 or by >= y0 + size + 2
            for _, (bx, by, bw, bh) in objects
        ):
            return x0, y0, size
    return None


def _shape_mask(shape: str, xx, yy, x0: float, y0: float, size: float) -> np.ndarray:
    if shape == "square":
        return (xx >= x0) & (xx < x0 + size) & (yy >= y0) & (yy < y0 + size)
    cx, cy, r = x0 + size / 2, y0 + size / 2, size / 2
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if shape == "diamond":
        return np.abs(xx - cx) + np.abs(yy - cy) <= r
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
    elif shape == "diamond":
        r = size / 2
        corners = [(x0 + r, y0), (x0 + size, y0 + r), (x0 + r, y0 + size), (x0, y0 + r)]
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


def toy_variants(recipe) -> list[ToyVariant]:
    """The toy sets a recipe reads (through its data sets or its class-embedding files)."""
    c = recipe.model.classifier
    names = [d.name for d in recipe.data.train] + list(recipe.data.test)
    files = (c.embeddings, c.category_info)
    found = [variant_of(n) for n in names] + [variant_of(f) for f in files]
    return list({v.name: v for v in found if v is not None}.values())


def ensure_toy_data(recipe, data_root: str | Path) -> None:
    """Generate every toy set the recipe reads that is not yet under ``data_root``."""
    for variant in toy_variants(recipe):
        ensure_toy_dataset(data_root, variant)
