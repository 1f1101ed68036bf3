"""The interface every detector family implements, and the registry that builds a recipe's
network by ``model.architecture``.

A family (DECOLA DETR, the BoxSup/Detic DETR, CenterNet2, ...) is one folder under
``decola_core.modeling`` whose model class subclasses :class:`DetectionModel` and registers
itself with :func:`register_family`. The trainer, predictor, teacher, self-labelling and
evaluation use only what is declared here: they never ask which family a model belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from decola_core.config.schema import Recipe
from decola_core.errors import ConfigError
from decola_core.modeling.classifier import set_vocabulary
from decola_core.modeling.ops.ms_deform_attn import resolve_default_backend
from decola_core.modeling.postprocess import Detections, PseudoBoxes


@dataclass
class TrainStep:
    """One training batch as a family's :meth:`DetectionModel.training_step` receives it."""

    images: list[torch.Tensor]  # uint8 (3, H, W), on the model's device
    targets: list[dict[str, torch.Tensor]]  # "labels" (G,), "boxes" (G, 4) cxcywh normalised
    image_labels: list[torch.Tensor]  # image-level labels (image-labelled data)
    weak: bool  # an image-labelled batch (no boxes)
    generator: torch.Generator  # this rank's draws of the step (prompts, federated classes)
    rng: np.random.Generator  # draws shared by every rank (e.g. class or object mode)
    teacher: Callable[[list[torch.Tensor], list[torch.Tensor]], list[PseudoBoxes]] | None = None
    #: per image, per box its polygons (flat x, y in the images' pixels); None: no masks
    polygons: list[list[list[np.ndarray]] | None] | None = None


@dataclass(frozen=True)
class KeyMap:
    """How a family's released (original) checkpoints name its tensors.

    original name = ``prefix`` + native name, except for ``renames`` (original -> native);
    keys starting with a ``dropped`` prefix (or ending in one of ``dropped_suffixes``) belong to
    something the native model does not have and are counted, not loaded.
    """

    prefix: str = ""
    #: A key prefix that identifies the layout when ``prefix`` is empty (names kept as is).
    marker: str = ""
    renames: Mapping[str, str] = field(default_factory=dict)
    dropped: Mapping[str, str] = field(default_factory=dict)  # key prefix -> what it is
    dropped_suffixes: Mapping[str, str] = field(default_factory=dict)  # key suffix -> what

    def matches(self, keys) -> bool:
        """Whether a state dict with these keys is in this original layout."""
        start = self.prefix or self.marker
        return bool(start) and any(k.startswith(start) for k in keys)

    def to_native(
        self, state: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """Native tensors and the counts of what was dropped (by ``dropped`` description)."""
        counts = {what: 0 for what in (*self.dropped.values(), *self.dropped_suffixes.values())}
        native: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            what = next((w for p, w in self.dropped.items() if key.startswith(p)), None)
            if what is None:
                ends = (w for s, w in self.dropped_suffixes.items() if key.endswith(s))
                what = next(ends, None)
            if what is not None:
                counts[what] += 1
            elif key in self.renames:
                native[self.renames[key]] = value
            else:
                native[key.removeprefix(self.prefix)] = value
        return native, counts

    def to_original(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse map: native tensors under their original names."""
        back = {native: original for original, native in self.renames.items()}
        return {back.get(k, self.prefix + k): v for k, v in state.items()}


class DetectionModel(nn.Module):
    """A detector family's network, built from a recipe, trained by its own step and run by
    :meth:`detect`.

    What a family can do is declared by class attributes, not found out with ``isinstance``.
    """

    #: The ``model.architecture`` value that selects this family (set by register_family).
    architecture: ClassVar[str] = ""
    #: Class mode: the detector can be prompted with class ids (language-conditioned).
    supports_prompts: ClassVar[bool] = False
    #: The detector predicts instance masks.
    supports_masks: ClassVar[bool] = False
    #: The layout of the family's released checkpoints.
    key_map: ClassVar[KeyMap] = KeyMap()
    #: Some batches leave parameters without a gradient (e.g. a mask head on image-labelled
    #: batches): DDP must look for unused parameters, as the original's launcher does.
    has_unused_parameters: ClassVar[bool] = False

    #: The original's FP16 mode: only the backbone runs under CUDA autocast (float16).
    backbone_fp16: bool = False
    num_classes: int
    #: Where the class embeddings come from (encoder, its weights' SHA-256, template, dim);
    #: set by build_model, recorded in checkpoints, checked when weights are loaded.
    embedding_provenance: dict | None = None
    #: Run the family's network step through ``torch.compile`` (``solver.compile``).
    compile_network: bool = False

    def call_network(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(self, *args, **kwargs)``, compiled when :attr:`compile_network` is set.

        ``method`` is the unbound function (``type(self).forward_batch``): one compiled function
        serves every instance (dynamo guards on the module), so a deep copy such as the frozen
        teacher runs its own weights, and state-dict keys stay unchanged.
        """
        if self.compile_network:
            resolve_default_backend(self.device)  # its self-check runs eagerly, not traced
            method = compiled_function(method)
        return method(self, *args, **kwargs)

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, data_root: Path) -> DetectionModel:
        """The randomly initialised network of ``recipe`` (embedding files below ``data_root``)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.buffers(), next(self.parameters())).device

    @property
    def trains_masks(self) -> bool:
        """Whether training reads instance masks (polygons) of the box data."""
        return False

    def training_step(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """The weighted loss terms of one batch; the family owns its criterion."""
        raise NotImplementedError

    def detect(
        self,
        images: list[torch.Tensor],
        output_sizes: list[tuple[int, int]],
        *,
        prompt_ids: torch.Tensor | None = None,
        max_detections: int = 300,
        score_threshold: float = 0.0,
        allowed_classes: list[torch.Tensor] | None = None,
    ) -> list[Detections]:
        """Detections per image, boxes in ``output_sizes`` pixels (the images as given are
        the network's input). ``prompt_ids`` (K,) selects class mode where supported;
        ``allowed_classes[b]`` keeps only those classes of image b."""
        raise NotImplementedError

    def needs_teacher(self, ann_types: set[str]) -> bool:
        """Whether training on data of ``ann_types`` needs a frozen teacher's pseudo boxes."""
        return False

    def frozen_teacher(self, *, per_prompt_topk: int) -> DetectionModel:
        """A frozen copy that pseudo-labels images (see :meth:`pseudo_label`)."""
        raise ConfigError(f"the {self.architecture} detector cannot pseudo-label images")

    def pseudo_label(
        self,
        images: list[torch.Tensor],
        image_labels: list[torch.Tensor],
        *,
        choice: str = "max-score",
        min_area: float = 0.0,
        per_image_prompts: bool = False,
    ) -> list[PseudoBoxes]:
        """At most one box per image-level label (needs ``supports_prompts``): prompted with the
        union of the images' labels, or with ``per_image_prompts`` each image with its own
        labels (every image must then have as many distinct labels), as if run alone."""
        raise ConfigError(
            f"the {self.architecture} detector cannot pseudo-label images (no class mode); "
            "use a DECOLA phase-1 model"
        )

    def set_vocabulary(self, embeddings: torch.Tensor) -> None:
        """Detect the classes of these (N, D) text embeddings from now on (inference)."""
        set_vocabulary(self, embeddings)


_FAMILIES: dict[str, type[DetectionModel]] = {}


_COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}


def compiled_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)``, made once per function."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn)
    return _COMPILED[fn]


def register_family(architecture: str) -> Callable[[type[DetectionModel]], type[DetectionModel]]:
    """Class decorator: ``model.architecture: <architecture>`` builds this family."""

    def register(cls: type[DetectionModel]) -> type[DetectionModel]:
        if architecture in _FAMILIES and _FAMILIES[architecture] is not cls:
            raise ValueError(f"architecture {architecture!r} is registered twice")
        cls.architecture = architecture
        _FAMILIES[architecture] = cls
        return cls

    return register


def family(architecture: str) -> type[DetectionModel]:
    """The model class registered for ``architecture``."""
    try:
        return _FAMILIES[architecture]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES))
        raise ConfigError(
            f"model.architecture {architecture!r} has no detector family (known: {known})"
        ) from None


def families() -> dict[str, type[DetectionModel]]:
    """Every registered family by architecture."""
    return dict(_FAMILIES)
