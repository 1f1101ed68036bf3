"""Data preparation: LVIS-base from LVIS train, the ImageNet-LVIS image-info file, and a check
that every image of a data set opens (spec pipeline §1.4-1.5)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from decola_core.data.images import IMAGE_SUFFIXES, image_size, skip_list_path
from decola_core.data.lvis import LvisDataset
from decola_core.errors import DatasetError
from decola_core.utils.io import atomic_open, atomic_write_text, read_json_file


def _write_json(path: Path, data: dict, protect: Iterable[Path] = ()) -> None:
    import orjson

    with atomic_open(path, "wb", protect=tuple(protect)) as out:
        out.write(orjson.dumps(data))


@dataclass
class LvisBaseReport:
    kept: int
    removed: int
    images: int
    rare_categories: int


def prepare_lvis_base(source: str | Path, output: str | Path) -> LvisBaseReport:
    """LVIS train without the boxes of rare (``frequency == "r"``) categories; images and all
    categories are kept, so images with only rare boxes stay as negatives (Detic's protocol)."""
    source, output = Path(source), Path(output)
    data = read_json_file(source, "LVIS annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise DatasetError(f"{source}: not an LVIS file (no 'categories' list)")
    try:
        rare = {c["id"] for c in data["categories"] if c["frequency"] == "r"}
    except (KeyError, TypeError):
        raise DatasetError(f"{source}: every category needs 'id' and 'frequency'") from None
    annotations = data.get("annotations", [])
    kept = [a for a in annotations if a.get("category_id") not in rare]
    report = LvisBaseReport(len(kept), len(annotations) - len(kept), len(data["images"]), len(rare))
    data["annotations"] = kept
    _write_json(output, data, protect=(source,))
    return report


def read_synset_map(path: str | Path) -> dict[str, str]:
    """``wnid synset`` pairs, one per line (tab, comma or space separated)."""
    mapping = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            raise DatasetError(f"{path}:{number}: expected 'wnid synset', got {line!r}")
        mapping[fields[0]] = fields[1]
    return mapping


def wordnet_synsets(wnids: Iterable[str]) -> dict[str, str]:
    """wnid -> synset name through NLTK's WordNet (needs ``nltk`` and its wordnet data)."""
    try:
        from nltk.corpus import wordnet
    except ImportError:
        raise DatasetError(
            "mapping ImageNet folders to LVIS synsets needs --synset-map FILE (wnid synset per "
            "line) or the nltk package with its wordnet data"
        ) from None
    try:
        return {w: wordnet.synset_from_pos_and_offset(w[0], int(w[1:])).name() for w in wnids}
    except LookupError as err:
        raise DatasetError(f"nltk has no wordnet data ({err}); pass --synset-map FILE") from None


def prepare_imagenet_lvis(
    image_root: str | Path,
    categories_file: str | Path,
    output: str | Path,
    *,
    synset_map: str | Path | None = None,
    workers: int = 8,
    on_images: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """The image-info file of ``<image_root>/<wnid>/<file>`` images: one entry per image with
    its folder's LVIS category as ``pos_category_ids`` and its size; categories carry the number
    of images as ``image_count``. Folders whose synset is not an LVIS category are skipped.
    Returns counts (images, classes, skipped folders)."""
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: no such image folder")
    data = read_json_file(categories_file, "LVIS annotation file")
    categories = data.get("categories") if isinstance(data, dict) else data
    if not isinstance(categories, list):
        raise DatasetError(f"{categories_file}: no 'categories' list")
    by_synset = {c.get("synset"): c["id"] for c in categories}
    folders = sorted(p for p in image_root.iterdir() if p.is_dir())
    wnids = [p.name for p in folders]
    synsets = read_synset_map(synset_map) if synset_map else wordnet_synsets(wnids)
    files, labels, skipped = [], [], 0
    for folder in folders:
        category = by_synset.get(synsets.get(folder.name))
        if category is None:
            skipped += 1
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(category)
    if on_start is not None:
        on_start(len(files))
    images, counts = [], {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for k, (path, size) in enumerate(zip(files, pool.map(_size_or_none, files), strict=True)):
            if on_images is not None:
                on_images(1)
            if size is None:
                raise DatasetError(f"{path}: cannot read the image (run 'decola data check')")
            images.append(
                {
                    "id": k + 1,
                    "file_name": path.relative_to(image_root).as_posix(),
                    "pos_category_ids": [labels[k]],
                    "width": size[0],
                    "height": size[1],
                }
            )
            counts[labels[k]] = counts.get(labels[k], 0) + 1
    cats = [{**c, "image_count": counts.get(c["id"], 0)} for c in categories]
    _write_json(Path(output), {"categories": cats, "images": images, "annotations": []})
    return {"images": len(images), "classes": len(counts), "skipped_folders": skipped}


def _size_or_none(path: Path) -> tuple[int, int] | None:
    try:
        return image_size(path)
    except OSError:
        return None


def check_images(
    annotations: str | Path,
    image_root: str | Path,
    *,
    workers: int | None = None,
    on_images: Callable[[int], None] | None = None,
) -> list[tuple[int, str, str]]:
    """Decode every image of an LVIS/COCO file; returns (image id, file, reason) for each that
    fails and writes them as the skip list beside the file (removed when all open)."""
    dataset = LvisDataset(annotations, image_root, skip_unreadable=False)
    records = [dataset.record(i) for i in range(len(dataset))]
    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        bad = []
        for record, reason in zip(records, pool.map(_open_error, records), strict=True):
            if on_images is not None:
                on_images(1)
            if reason is not None:
                bad.append((record.image_id, str(record.path), reason))
    target = skip_list_path(annotations)
    if bad:
        lines = [f"# unreadable images of {Path(annotations).name} (decola data check)"]
        lines += [f"{image_id}\t{path}\t{reason}" for image_id, path, reason in bad]
        atomic_write_text(target, "\n".join(lines) + "\n")
    elif target.exists():
        target.unlink()
    return bad


def _open_error(record) -> str | None:
    from PIL import Image

    try:
        with Image.open(record.path) as image:
            image.load()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return f"unreadable ({type(err).__name__}: {err})".replace("\t", " ").replace("\n", " ")
    return None
