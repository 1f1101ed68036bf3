"""Loading weights into the native model: released checkpoints, native checkpoints and
third-party backbone files, each by an explicit key map, with a report of what did not match.

- released checkpoint: the model family's :class:`~decola_core.modeling.interface.KeyMap`
  (DETR families: strip ``detr.``; drop the phase-2 teacher ``pseudo_detr.*`` and
  ``num_batches_tracked``; the baseline's criterion buffer becomes ``fed_loss_weight``);
- timm/torchvision ResNet file (``conv1.weight``, ``layer1...``, ``fc.*``): prefix
  ``backbone.0.backbone.base.``, drop the classifier;
- official Swin file (``patch_embed...``, ``layers.*.blocks...``): prefix ``backbone.0.backbone.``,
  drop ``head.*``, the final ``norm.*`` and ``attn_mask`` buffers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decola_core.errors import ConfigError, DecolaError
from decola_core.modeling.detector import DETR_KEY_MAP
from decola_core.modeling.interface import KeyMap
from decola_core.utils.io import atomic_open
from decola_core.utils.provenance import describe, same_space

log = logging.getLogger(__name__)

EMBEDDING_BUFFERS = ("zs_weight",)


@dataclass
class LoadReport:
    """What happened when weights were loaded."""

    source: str
    format: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self, names: int = 3) -> str:
        """One line: counts of loaded, missing, unused and shape-skipped keys, with the
        first ``names`` names of each kind."""

        def first(keys) -> str:
            shown = ", ".join(keys[:names])
            return f" ({shown}{', ...' if len(keys) > names else ''})" if keys else ""

        parts = [f"loaded {self.loaded} tensors from {self.source} ({self.format})"]
        if self.missing:
            parts.append(f"{len(self.missing)} model keys not in the file{first(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} file keys unused{first(self.unexpected)}")
        if self.shape_mismatch:
            skipped = [k for k, _, _ in self.shape_mismatch]
            parts.append(f"{len(skipped)} skipped for shape{first(skipped)}")
        parts += [f"dropped {n} {what}" for what, n in self.dropped.items() if n]
        return "; ".join(parts)


def read_state_dict(path: str | Path, *, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (``model``/``state_dict`` entries unwrapped).

    Files are opened with ``weights_only=True`` unless ``trusted`` (old pickled formats).
    """
    return read_checkpoint(path, trusted=trusted)[0]


def read_checkpoint(
    path: str | Path, *, trusted: bool = False
) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(the tensors, the embedding provenance the checkpoint records or None)."""
    path = Path(path)
    if not path.is_file():
        raise DecolaError(f"weights file not found: {path}")
    if path.suffix == ".pkl":
        return _read_pickle(path, trusted), None
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        hint = "" if trusted else " (if you trust this legacy file: --trust-weights)"
        raise DecolaError(
            f"{path}: cannot read weights ({type(err).__name__}: {err}){hint}"
        ) from None
    provenance = data.get("embedding_provenance") if isinstance(data, dict) else None
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise DecolaError(f"{path}: expected a dict of tensors (optionally under 'model')")
    return data, provenance if isinstance(provenance, dict) else None


def _read_pickle(path: Path, trusted: bool) -> dict[str, torch.Tensor]:
    """detectron2 ``.pkl`` weights ({"model": {name: numpy array}}); pickles run code when
    loaded, so this needs ``trusted``."""
    if not trusted:
        raise DecolaError(
            f"{path}: .pkl files are Python pickles and can run code when loaded; load it only "
            "if you trust it (--trust-weights; trusted=True in Python)"
        )
    import pickle

    import numpy as np

    with open(path, "rb") as handle:
        data = pickle.load(handle, encoding="latin1")
    model = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise DecolaError(f"{path}: expected a dict of arrays (optionally under 'model')")
    return {k: torch.as_tensor(np.asarray(v)) for k, v in model.items()}


def to_native(
    state: dict[str, torch.Tensor], key_map: KeyMap = DETR_KEY_MAP
) -> tuple[dict[str, torch.Tensor], str, dict[str, int]]:
    """Map a state dict of any supported format onto native key names; ``key_map`` is the
    released layout of the model family (the DETR families' by default)."""
    keys = list(state)
    dropped = {"teacher (pseudo_detr)": 0, "num_batches_tracked": 0, "classifier head": 0}
    out: dict[str, torch.Tensor] = {}
    if key_map.matches(keys):
        fmt = "detectron2"
        out, counts = key_map.to_native(state)
        dropped.update(counts)
    elif "stem.conv1.weight" in state:
        fmt = "detectron2-resnet"
        out = _prefixed(state, "backbone.0.backbone.", dropped, head=lambda k: k.startswith("fc"))
    elif any(k.startswith("patch_embed.") for k in keys):
        fmt = "swin"
        out = _prefixed(
            state,
            "backbone.0.backbone.",
            dropped,
            head=lambda k: k.startswith(("head.", "norm.")) or k.endswith("attn_mask"),
        )
    elif any(k.startswith("layer1.") for k in keys) and "conv1.weight" in state:
        fmt = "resnet"
        out = _prefixed(
            state,
            "backbone.0.backbone.base.",
            dropped,
            head=lambda k: k.startswith("fc."),
            drop_bn_counters=True,
        )
    else:
        fmt = "native"
        out = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return out, fmt, dropped


def _prefixed(
    state: dict[str, torch.Tensor],
    prefix: str,
    dropped: dict[str, int],
    *,
    head,
    drop_bn_counters: bool = False,
) -> dict[str, torch.Tensor]:
    """A third-party backbone's weights under ``prefix``, without its classifier head (counted
    in ``dropped``) and, if asked, without BatchNorm's ``num_batches_tracked`` counters."""
    out = {}
    for k, v in state.items():
        if head(k):
            dropped["classifier head"] += 1
        elif drop_bn_counters and k.endswith("num_batches_tracked"):
            dropped["num_batches_tracked"] += 1
        else:
            out[prefix + k] = v
    return out


def load_weights(
    model: nn.Module,
    weights: str | Path | dict[str, torch.Tensor],
    *,
    trusted: bool = False,
    allow_embedding_mismatch: bool = False,
) -> LoadReport:
    """Load ``weights`` (a file or a state dict) into ``model`` and report the differences.

    Shape mismatches are skipped (e.g. a checkpoint trained with another vocabulary). Class
    embeddings that the model was built with from a file win over the checkpoint's copy; a
    difference is logged with the file that is used. A checkpoint trained with embeddings of
    another text encoder than the model's is refused unless ``allow_embedding_mismatch``.
    """
    source = str(weights) if not isinstance(weights, dict) else "state dict"
    if isinstance(weights, dict):
        state, trained_with = weights, None
    else:
        state, trained_with = read_checkpoint(weights, trusted=trusted)
    check_embedding_space(
        trained_with, getattr(model, "embedding_provenance", None), source, allow_embedding_mismatch
    )
    native, fmt, dropped = to_native(state, getattr(model, "key_map", DETR_KEY_MAP))
    report = LoadReport(source=source, format=fmt, dropped=dropped)
    own = model.state_dict()
    usable: dict[str, torch.Tensor] = {}
    for key, value in native.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
        elif key.rsplit(".", 1)[-1] in EMBEDDING_BUFFERS and not torch.allclose(
            own[key].float(), value.float(), atol=1e-5
        ):
            report.notes.append(key)
        else:
            usable[key] = value
    if report.notes:
        log.warning(
            "%s: %d class-embedding buffers differ from the embedding file the model was "
            "built with; the file's embeddings are used",
            source,
            len(report.notes),
        )
    result = model.load_state_dict(usable, strict=False)
    report.missing = [k for k in result.missing_keys if k not in native]
    report.loaded = len(usable)
    log.info(report.summary())
    return report


def check_embedding_space(
    trained_with: dict | None, model_uses: dict | None, source: str, allow: bool
) -> None:
    """Refuse weights trained with class embeddings from another text encoder than the
    model's: the detector would score every class against vectors of a space it never saw."""
    if same_space(trained_with, model_uses) is not False:
        return
    message = (
        f"{source} was trained with class embeddings from {describe(trained_with)}, but the "
        f"model's embeddings come from {describe(model_uses)}"
    )
    if allow:
        log.warning("%s; loading anyway (--allow-embedding-mismatch)", message)
        return
    raise ConfigError(
        f"{message}: re-embed the class names with the same encoder (decola data embed "
        "--clip-weights ...), or pass --allow-embedding-mismatch to load anyway"
    )


def save_weights(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Write ``{"model": state_dict, "embedding_provenance": ..., **extra}`` atomically (temp
    file in the folder + rename)."""
    path = Path(path)
    provenance = getattr(model, "embedding_provenance", None)
    with atomic_open(path, "wb") as handle:
        torch.save(
            {"model": model.state_dict(), "embedding_provenance": provenance, **extra}, handle
        )
    return path
