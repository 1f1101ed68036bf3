"""Instance masks for box-only detectors: Segment Anything prompted with the detected boxes.

Needs the optional ``segment-anything`` package (``pip install 'decola[sam]'``) and a SAM
checkpoint file (a local file or a zoo entry: ``sam-vit-h``, ``sam-vit-l``, ``sam-vit-b``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from decola_core.errors import ConfigError, DecolaError

SAM_MODELS = ("vit_h", "vit_l", "vit_b")


def sam_model_type(checkpoint: Path, model_type: str | None = None) -> str:
    """The SAM variant: ``model_type`` if given, else the one the file name says."""
    if model_type is not None:
        if model_type not in SAM_MODELS:
            raise ConfigError(f"SAM model '{model_type}' is unknown ({', '.join(SAM_MODELS)})")
        return model_type
    found = [m for m in SAM_MODELS if m in checkpoint.name]
    if len(found) != 1:
        raise ConfigError(
            f"{checkpoint}: cannot tell the SAM model from the file name; name it "
            f"(--sam-model {' | '.join(SAM_MODELS)})"
        )
    return found[0]


class BoxPromptedMasks:
    """``masks(image, boxes)``: one SAM mask per box, at the image's size."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        model_type: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise DecolaError(f"SAM checkpoint not found: {checkpoint}")
        kind = sam_model_type(checkpoint, model_type)
        try:
            from segment_anything import SamPredictor, sam_model_registry
        except ImportError:
            raise ConfigError(
                "masks from Segment Anything need the segment-anything package: "
                "pip install 'decola[sam]'"
            ) from None
        try:
            model = sam_model_registry[kind](checkpoint=str(checkpoint))
        except Exception as err:  # noqa: BLE001 - torch/SAM raise many types for a bad file
            raise DecolaError(
                f"{checkpoint}: not a SAM {kind} checkpoint ({type(err).__name__}: {err})"
            ) from None
        self.predictor = SamPredictor(model.to(device).eval())
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(n, H, W) bool masks for (n, 4) xyxy ``boxes`` in the (3, H, W) uint8 ``image``."""
        height, width = image.shape[1:]
        if len(boxes) == 0:
            return torch.zeros((0, height, width), dtype=torch.bool)
        self.predictor.set_image(image.permute(1, 2, 0).cpu().numpy())
        prompts = self.predictor.transform.apply_boxes_torch(
            boxes.to(self.device, torch.float32), (height, width)
        )
        masks, _, _ = self.predictor.predict_torch(
            None, None, boxes=prompts, multimask_output=False
        )
        return masks[:, 0].to("cpu", torch.bool)
