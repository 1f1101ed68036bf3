"""Named datasets: the sets of the original release plus sets a recipe declares by path.

Every path is relative to the data root (``DECOLA_DATA_ROOT``, default ``./datasets``), laid out
as in the original release (``lvis/``, ``coco/``, ``imagenet/``, ``objects365/``, ...). A recipe
adds its own sets under ``data.datasets`` (image root, annotation file, annotation type), so a
new data set needs no code.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from decola_core.config.schema import DatasetDeclaration
from decola_core.data.lvis import LvisDataset
from decola_core.errors import DatasetError

AnnType = Literal["box", "image"]
Evaluator = Literal["lvis", "coco", "none"]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's files live and how to read and evaluate it."""

    name: str
    image_root: str
    annotations: str
    ann_type: AnnType = "box"
    evaluator: Evaluator = "lvis"
    description: str = ""
    view_of: str | None = None  # when the file is missing: this dataset ...
    drop_frequencies: tuple[str, ...] = ()  # ... without the boxes of these frequency tags

    def resolve(self, data_root: Path) -> ResolvedDataset:
        """The dataset with its paths joined onto ``data_root`` (absolute paths stay)."""
        return ResolvedDataset(
            spec=self,
            image_root=data_root / self.image_root,
            annotations=data_root / self.annotations,
        )


@dataclass(frozen=True)
class ResolvedDataset:
    """A dataset spec with absolute paths under a data root."""

    spec: DatasetSpec
    image_root: Path
    annotations: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def missing(self) -> list[Path]:
        """The paths of this dataset that do not exist."""
        return [p for p in (self.annotations, self.image_root) if not p.exists()]


_PSEUDO_DESCRIPTION = "ImageNet-LVIS pseudo boxes from the {} phase-1 model (zoo download)"


def _pseudo(labeler: str) -> DatasetSpec:
    name = f"imagenet_lvis_v1_decola_phase1_{labeler}_4x"
    return DatasetSpec(
        name,
        "imagenet/ImageNet-LVIS",
        f"imagenet/pseudo_annotations/{name}.json",
        description=_PSEUDO_DESCRIPTION.format(labeler.replace("_", " ")),
    )


BUILTIN_DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "lvis_v1_train",
            "coco",
            "lvis/lvis_v1_train.json",
            description="LVIS v1 train (100,170 images, 1203 classes)",
        ),
        DatasetSpec(
            "lvis_v1_train_norare",
            "coco",
            "lvis/lvis_v1_train_norare.json",
            description="LVIS-base: LVIS v1 train without rare-class boxes",
            view_of="lvis_v1_train",
            drop_frequencies=("r",),
        ),
        DatasetSpec(
            "lvis_v1_val",
            "coco",
            "lvis/lvis_v1_val.json",
            description="LVIS v1 val (19,809 images)",
        ),
        DatasetSpec(
            "lvis_v1_minival",
            "coco",
            "lvis/lvis_v1_minival_inserted_image_name.json",
            description="LVIS minival (about 5k images; GLIP/MDETR split)",
        ),
        DatasetSpec(
            "imagenet_lvis_v1",
            "imagenet/ImageNet-LVIS",
            "imagenet/annotations/imagenet_lvis_image_info.json",
            ann_type="image",
            evaluator="none",
            description="ImageNet-21k images of 997 LVIS classes, image labels only",
        ),
        _pseudo("r50_21k_zeroshot"),
        _pseudo("r50_21k_standard"),
        _pseudo("swinb_zeroshot"),
        _pseudo("swinb_standard"),
        DatasetSpec(
            "coco_2017_train",
            "coco/train2017",
            "coco/annotations/instances_train2017.json",
            evaluator="coco",
            description="COCO 2017 train",
        ),
        DatasetSpec(
            "coco_2017_val",
            "coco/val2017",
            "coco/annotations/instances_val2017.json",
            evaluator="coco",
            description="COCO 2017 val",
        ),
        DatasetSpec(
            "objects365_v2_train",
            "objects365/train",
            "objects365/annotations/zhiyuan_objv2_train_fixname_fixmiss.json",
            evaluator="coco",
            description="Objects365 v2 train (names fixed)",
        ),
        DatasetSpec(
            "objects365_v2_val",
            "objects365/val",
            "objects365/annotations/zhiyuan_objv2_val_fixname.json",
            evaluator="coco",
            description="Objects365 v2 val (names fixed)",
        ),
        DatasetSpec(
            "objects365_v1_val",
            "objects365/val",
            "objects365/annotations/objects365_v1_val_fixname.json",
            evaluator="coco",
            description="Objects365 v1 val (names fixed)",
        ),
        DatasetSpec(
            "toy_train",
            "toy/images",
            "toy/annotations/toy_train.json",
            description="built-in synthetic toy set (generated), train split",
        ),
        DatasetSpec(
            "toy_val",
            "toy/images",
            "toy/annotations/toy_val.json",
            description="built-in synthetic toy set (generated), val split",
        ),
        DatasetSpec(
            "toy_image_labels",
            "toy/images",
            "toy/annotations/toy_image_labels.json",
            ann_type="image",
            evaluator="none",
            description="built-in synthetic toy set (generated), image labels only",
        ),
        DatasetSpec(
            "toy_crowded_train",
            "toy_crowded/images",
            "toy_crowded/annotations/toy_crowded_train.json",
            description="built-in crowded toy set (generated): 16 classes, base boxes only",
        ),
        DatasetSpec(
            "toy_crowded_val",
            "toy_crowded/images",
            "toy_crowded/annotations/toy_crowded_val.json",
            description="built-in crowded toy set (generated), val split (all 16 classes)",
        ),
    )
}


class DatasetCatalog:
    """Looks up dataset names: a recipe's declared sets first, then the built-in ones."""

    def __init__(
        self, data_root: Path, declared: Mapping[str, DatasetDeclaration] | None = None
    ) -> None:
        self.data_root = Path(data_root)
        self._specs = dict(BUILTIN_DATASETS)
        for name, decl in (declared or {}).items():
            self._specs[name] = DatasetSpec(
                name,
                image_root=decl.image_root,
                annotations=decl.annotations,
                ann_type=decl.ann_type,
                evaluator=decl.evaluator,
                description="declared in the recipe",
            )

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> ResolvedDataset:
        """The named dataset resolved under the data root, or a DatasetError with a hint."""
        spec = self._specs.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, self._specs, n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise DatasetError(
                f"unknown dataset '{name}'{hint}; declare it under data.datasets in the recipe "
                "(image_root, annotations, ann_type)"
            )
        return spec.resolve(self.data_root)

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def open(
        self,
        name: str,
        *,
        min_score: float = 0.0,
        drop_empty: bool = False,
        with_polygons: bool = False,
    ):
        """The dataset's records (an LVIS-base view is built from LVIS when its file is absent);
        ``drop_empty`` leaves out images without boxes; ``with_polygons`` keeps the instances'
        polygon segmentations (mask training)."""
        resolved = self.get(name)
        spec = resolved.spec
        if not resolved.annotations.is_file() and spec.view_of is not None:
            source = self.get(spec.view_of)
            if source.annotations.is_file():
                return LvisDataset(
                    source.annotations,
                    resolved.image_root,
                    min_score=min_score,
                    drop_frequencies=set(spec.drop_frequencies),
                    drop_empty=drop_empty,
                    with_polygons=with_polygons,
                )
        return LvisDataset(
            resolved.annotations,
            resolved.image_root,
            min_score=min_score,
            drop_empty=drop_empty,
            with_polygons=with_polygons,
        )
