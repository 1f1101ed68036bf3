"""Box formats and geometry shared by the model, the losses and the data pipeline."""

from decola_core.structures.boxes import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    generalized_box_iou,
    inverse_sigmoid,
)

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xyxy_to_xywh",
    "generalized_box_iou",
    "inverse_sigmoid",
]
