"""The BoxSup / Detic family: the stock two-stage Deformable DETR baseline (object mode only)."""

from decola_core.modeling.boxsup.criterion import BaselineCriterion, max_size_loss
from decola_core.modeling.boxsup.model import BoxSupDETR

__all__ = ["BaselineCriterion", "BoxSupDETR", "max_size_loss"]
