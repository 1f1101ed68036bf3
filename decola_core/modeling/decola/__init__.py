"""The DECOLA family: language-conditioned Deformable DETR (phase 1 and phase 2)."""

from decola_core.modeling.decola.criterion import DecolaCriterion
from decola_core.modeling.decola.model import DecolaDETR

__all__ = ["DecolaCriterion", "DecolaDETR"]
