"""The Python entry point for users who do not want the CLI: load a model, detect, draw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from decola_core.config.loader import load_recipe
from decola_core.data.images import read_image
from decola_core.data.toy import ensure_toy_data
from decola_core.engine.predict import (
    draw_detections,
    filter_detections,
    recipe_for_weights,
    run_predict,
    use_custom_vocabulary,
    with_masks,
)
from decola_core.modeling.postprocess import Detections
from decola_core.modeling.predictor import Predictor, as_uint8_chw
from decola_core.zoo import resolve_weights


@dataclass
class NamedDetections:
    """Detections of one image with their class names: boxes xyxy in pixels, scores, labels."""

    boxes: torch.Tensor  # (n, 4)
    scores: torch.Tensor  # (n,)
    labels: torch.Tensor  # (n,) 0-based class ids
    names: list[str]  # (n,) class names
    image_size: tuple[int, int]  # (height, width)
    masks: torch.Tensor | None = None  # (n, height, width) bool, for detectors with masks

    def __len__(self) -> int:
        return len(self.names)


class Detector:
    """A DECOLA (or baseline) detector with its vocabulary.

    >>> detector = Detector.from_pretrained("decola-phase1-lbase-r50")
    >>> found = detector.detect("photo.jpg", classes=["cola", "fork"])
    >>> detector.draw("photo.jpg", found).save("photo_boxes.png")
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        #: (image, boxes) -> masks for every detection (see :meth:`use_sam`); None: the
        #: detector's own masks, if it predicts any.
        self.masker = None

    def use_sam(
        self,
        checkpoint: str | Path,
        *,
        model_type: str | None = None,
        cache_dir: str | Path = "~/.cache/decola",
        offline: bool = False,
    ) -> None:
        """Give every detection a Segment Anything mask prompted with its box (a SAM
        checkpoint file or zoo name; needs ``pip install 'decola[sam]'``)."""
        from decola_core.modeling.sam import BoxPromptedMasks

        path = resolve_weights(str(checkpoint), Path(cache_dir).expanduser(), offline=offline)
        self.masker = BoxPromptedMasks(
            path, model_type=model_type, device=self.predictor.model.device
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        config: str | Path | None = None,
        overrides: Sequence[str] = (),
        data_root: str | Path = "datasets",
        cache_dir: str | Path = "~/.cache/decola",
        offline: bool = False,
        device: str = "cpu",
        trusted: bool = False,
        allow_embedding_mismatch: bool = False,
    ) -> Detector:
        """Load a zoo model by name or a weights file; ``config`` names the recipe when the
        weights do not come with one (zoo entries and ``decola train`` checkpoints do);
        ``trusted`` allows pickled (``.pkl``) weights, which can run code when loaded;
        ``allow_embedding_mismatch`` loads weights trained with another encoder's embeddings."""

        weights = resolve_weights(str(name_or_path), Path(cache_dir).expanduser(), offline=offline)
        if config is not None:
            recipe = load_recipe(config, overrides)
        else:
            recipe = recipe_for_weights(str(name_or_path), weights, overrides)
        ensure_toy_data(recipe, data_root)
        predictor = Predictor.from_recipe(
            recipe,
            weights,
            data_root=data_root,
            cache_dir=cache_dir,
            device=device,
            trusted=trusted,
            allow_embedding_mismatch=allow_embedding_mismatch,
        )
        return cls(predictor)

    @classmethod
    def from_exported(cls, path: str | Path) -> Detector:
        """Run a file written by ``decola export`` (ONNX through onnxruntime, or TorchScript)
        with no torch model built; the file's metadata gives its vocabulary and test sizes."""
        from decola_core.export.runtime import ExportedDetector

        exported = ExportedDetector(path)
        test = exported.meta.get("test", {})
        predictor = Predictor(
            exported,  # type: ignore[arg-type]  (the detect interface the predictor uses)
            min_size=test.get("min_size", 800),
            max_size=test.get("max_size", 1333),
            max_detections=test.get("detections_per_image", 300),
            score_threshold=test.get("score_threshold", 0.0),
            class_names=exported.meta.get("vocabulary", {}).get("names"),
            recipe_name=f"{exported.meta.get('recipe', '')} ({exported.format})",
        )
        return cls(predictor)

    #: ``Detector.from_onnx(FILE)``: the same for an ONNX file.
    from_onnx = from_exported

    def set_vocabulary(
        self,
        names: Sequence[str],
        clip_weights: str | Path,
        *,
        clip_model: str | None = None,
        template: str = "a {}",
        cache_dir: str | Path = "~/.cache/decola",
        offline: bool = False,
    ) -> bool:
        """Detect any ``names`` from now on: they are embedded with the local CLIP weights
        (open_clip ``clip_model``, default ViT-B-32-quickgelu) and cached. Returns whether the
        embeddings came from the cache."""
        device = str(next(self.predictor.model.parameters()).device)
        return use_custom_vocabulary(
            self.predictor, names, clip_weights, clip_model=clip_model, template=template,
            cache_dir=cache_dir, device=device, offline=offline,
        )  # fmt: skip

    @property
    def recipe_name(self) -> str:
        return self.predictor.recipe_name

    def predict_files(self, job, on_image=None) -> list[Path]:
        """``decola predict``: a JSON and an annotated PNG per image file of ``job``
        (:class:`~decola_core.jobs.PredictJob`); returns the JSON paths."""
        return run_predict(self.predictor, job, on_image=on_image, masker=self.masker)

    @property
    def class_names(self) -> list[str]:
        """The model's vocabulary, in class-id order."""
        return list(self.predictor.class_names or [])

    def detect(
        self,
        image,
        classes: Sequence[str | int] | None = None,
        *,
        conditioned: bool = True,
        threshold: float = 0.3,
        max_detections: int = 100,
    ) -> NamedDetections:
        """Detect in an image (path, PIL image, HxWx3 array or 3xHxW uint8 tensor).

        With ``classes`` the model is prompted with them (class mode) unless ``conditioned`` is
        False, which detects in object mode and keeps those classes only.
        """
        tensor = _as_tensor(image)
        wanted = None if classes is None else self.predictor.class_ids(classes)
        prompts = wanted if wanted is not None and conditioned else None
        raw = self.predictor([tensor], prompts)[0]
        kept = filter_detections(raw, threshold, max_detections, wanted)
        if self.masker is not None:
            kept = with_masks(kept, tensor, self.masker)
        names = self.class_names
        return NamedDetections(
            kept.boxes,
            kept.scores,
            kept.labels,
            [names[i] for i in kept.labels.tolist()],
            kept.image_size,
            kept.masks,
        )

    def draw(self, image, detections: NamedDetections | Detections):
        """A PIL image with the detections' boxes, names and scores drawn on ``image``."""
        return draw_detections(_as_tensor(image), detections, self.class_names)


def _as_tensor(image) -> torch.Tensor:
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    return as_uint8_chw(image)
