"""Image tags -> an image-info file: DECOLA's self-labelling on a user's own tagged images.

A tags file maps image files (paths relative to the image folder) to the class names known to be
in them, in one of two forms:

- CSV with a header row ``file,tags``; the tags of an image are separated by ``;``
  (``photos/a.jpg,cat;sofa``). An image may also take several rows; its tags are united.
- JSON: an object ``{"photos/a.jpg": ["cat", "sofa"], ...}``.

Names must be classes of the model's vocabulary; unknown names are refused, with the closest
vocabulary names as suggestions.
"""

from __future__ import annotations

import csv
import difflib
import json
from pathlib import Path

from decola_core.data.images import image_size
from decola_core.errors import DatasetError
from decola_core.utils.io import atomic_write_text, read_json_file


def read_tags(path: str | Path) -> dict[str, list[str]]:
    """{image file: [class names]} from a CSV (``file,tags``, tags split by ``;``) or JSON file,
    in file order, each image's names without repeats."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"tags file not found: {path}")
    if path.suffix.lower() == ".json":
        data = read_json_file(path, "tags file")
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in data.values()
        ):
            raise DatasetError(f'{path}: expected {{"image file": ["class name", ...], ...}}')
        rows = [(str(k), v) for k, v in data.items()]
    else:
        rows = _csv_rows(path)
    tags: dict[str, list[str]] = {}
    for file, names in rows:
        kept = tags.setdefault(file, [])
        kept.extend(n for n in (x.strip() for x in names) if n and n not in kept)
    if not tags:
        raise DatasetError(f"{path}: no tagged images")
    return tags


def _csv_rows(path: Path) -> list[tuple[str, list[str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"file", "tags"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: a CSV tags file needs the header 'file,tags'")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not (row.get("file") or "").strip():
                raise DatasetError(f"{path}:{line}: empty 'file'")
            rows.append((row["file"].strip(), (row.get("tags") or "").split(";")))
    return rows


def tags_to_image_info(
    tags: dict[str, list[str]],
    images: Path,
    categories: list[dict],
    output: Path,
    *,
    source: str | Path = "tags",
) -> int:
    """Write an LVIS-style image-info file (``images`` with ``pos_category_ids``, the model's
    ``categories``) for the tagged images under ``images``; returns the number of images.
    Images without a known tag are refused, as are missing files and unknown names."""
    ids = {c["name"]: c["id"] for c in categories}
    unknown = sorted({n for names in tags.values() for n in names if n not in ids})
    if unknown:
        hints = []
        for name in unknown[:5]:
            close = difflib.get_close_matches(name, ids, n=3, cutoff=0.6)
            hints.append(f"'{name}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise DatasetError(
            f"{source}: {len(unknown)} tag(s) not in the model's vocabulary: "
            f"{'; '.join(hints)}{more}"
        )
    entries = []
    for i, (file, names) in enumerate(tags.items(), start=1):
        path = Path(images) / file
        if not names:
            raise DatasetError(f"{source}: {file} has no tags")
        try:
            width, height = image_size(path)
        except OSError as err:
            raise DatasetError(f"{source}: {file}: cannot read {path} ({err})") from None
        entries.append(
            {
                "id": i,
                "file_name": file,
                "height": height,
                "width": width,
                "pos_category_ids": [ids[n] for n in names],
            }
        )
    info = {"images": entries, "annotations": [], "categories": categories}
    atomic_write_text(output, json.dumps(info) + "\n")
    return len(entries)
