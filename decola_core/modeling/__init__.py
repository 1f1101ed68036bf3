"""The DECOLA network and the BoxSup/Detic baseline in pure PyTorch.

Public API: :func:`build_model` (recipe -> network), :func:`load_weights` (released detectron2,
native or third-party backbone checkpoints), :func:`postprocess`, and the losses in
:mod:`decola_core.modeling.criterion`.
"""

from decola_core.modeling.build import build_model
from decola_core.modeling.checkpoint import LoadReport, load_weights
from decola_core.modeling.postprocess import Detections, postprocess

__all__ = ["Detections", "LoadReport", "build_model", "load_weights", "postprocess"]
