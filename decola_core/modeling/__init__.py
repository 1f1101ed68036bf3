"""The detector families (DECOLA DETR, the BoxSup/Detic DETR baseline) in pure PyTorch.

Public API: :func:`build_model` (recipe -> network of the family registered for
``model.architecture``), :class:`DetectionModel` (what every family implements),
:func:`load_weights` (released, native or third-party backbone checkpoints), :func:`postprocess`.
"""

# Importing the family packages registers them (register_family) for build_model.
from decola_core.modeling import boxsup, centernet2, decola  # noqa: F401
from decola_core.modeling.build import build_model
from decola_core.modeling.checkpoint import LoadReport, load_weights
from decola_core.modeling.interface import DetectionModel, TrainStep
from decola_core.modeling.postprocess import Detections, postprocess

__all__ = [
    "DetectionModel",
    "Detections",
    "LoadReport",
    "TrainStep",
    "build_model",
    "load_weights",
    "postprocess",
]
