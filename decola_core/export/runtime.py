"""An exported detector (ONNX through onnxruntime, or TorchScript) behind the ``detect``
interface the :class:`~decola_core.modeling.predictor.Predictor` uses: no torch model is built,
only the file and its ``.json`` metadata are read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from decola_core.errors import InputError
from decola_core.modeling.postprocess import Detections


def read_export_metadata(path: Path) -> dict:
    """The ``FILE.json`` written beside an exported file."""
    meta_path = path.with_name(path.name + ".json")
    if not meta_path.is_file():
        raise InputError(f"{path}: no {meta_path.name} beside it (written by decola export)")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{meta_path}: not valid JSON ({err})") from None


class ExportedDetector:
    """Runs an exported file; ``detect`` has :class:`DetectionModel`'s signature."""

    supports_masks = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"exported model not found: {self.path}")
        self.meta = read_export_metadata(self.path)
        self.format = self.meta["format"]
        self.supports_prompts = self.meta["mode"] == "conditioned"
        self.architecture = self.meta.get("architecture", "exported")
        spec = self.meta["inputs"]["images"]
        self.with_preprocess = bool(self.meta["with_preprocess"])
        self.pixel_mean = np.asarray(spec["pixel_mean"], np.float32).reshape(3, 1, 1)
        self.pixel_std = np.asarray(spec["pixel_std"], np.float32).reshape(3, 1, 1)
        self.bgr = spec["channels"] == "BGR"
        self.image_size = self.meta.get("image_size")  # None: any size
        self.embeddings: np.ndarray | None = None
        if self.format == "onnx":
            from decola_core.export.exporter import require_onnx

            require_onnx()
            import onnxruntime as ort

            try:
                self._session = ort.InferenceSession(
                    str(self.path), providers=["CPUExecutionProvider"]
                )
            except Exception as err:  # onnxruntime raises its own types for unreadable files
                raise InputError(f"{self.path}: not a readable ONNX file ({err})") from None
            self._names = [i.name for i in self._session.get_inputs()]
        else:
            import warnings

            with warnings.catch_warnings():  # TorchScript's deprecation notice
                warnings.simplefilter("ignore", FutureWarning)
                try:
                    self._module = torch.jit.load(str(self.path))
                except (RuntimeError, ValueError) as err:
                    raise InputError(
                        f"{self.path}: not a readable TorchScript file ({err})"
                    ) from None
            self._names = list(self.meta["inputs"])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def eval(self) -> ExportedDetector:
        return self

    def set_vocabulary(self, embeddings: torch.Tensor) -> None:
        """New class embeddings, for a file exported with the vocabulary as an input."""
        if not self.meta.get("embeddings_input"):
            raise InputError(
                f"{self.path} has its vocabulary built in; export with --embeddings-input to "
                "change it at run time"
            )
        self.embeddings = embeddings.float().cpu().numpy()

    def _inputs(self, image: torch.Tensor, prompt_ids: torch.Tensor | None) -> list[np.ndarray]:
        if self.with_preprocess:  # (1, H, W, 3) uint8 RGB; the graph normalises
            inputs = [image.permute(1, 2, 0).cpu().numpy()[None]]
        else:
            chw = image.cpu().numpy().astype(np.float32)
            if self.bgr:
                chw = chw[::-1]
            inputs = [((chw - self.pixel_mean) / self.pixel_std)[None].astype(np.float32)]
        if "prompt_ids" in self._names:
            if prompt_ids is None:
                raise InputError(f"{self.path} is a conditioned export: it needs classes")
            inputs.append(prompt_ids.to(torch.int64).cpu().numpy())
        elif prompt_ids is not None:
            raise InputError(f"{self.path} is an object-mode export: it takes no prompts")
        if "embeddings" in self._names:
            if self.embeddings is None:
                raise InputError(f"{self.path} takes the vocabulary as an input: set one first")
            inputs.append(self.embeddings)
        return inputs

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self.format == "onnx":
            return self._session.run(None, dict(zip(self._names, inputs, strict=True)))
        with torch.no_grad():
            return [t.numpy() for t in self._module(*(torch.from_numpy(x) for x in inputs))]

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
        """Detections per image in ``output_sizes`` pixels. A fixed-size export gets each
        image resized to its size; ``allowed_classes`` filters the exported top detections."""
        from decola_core.data.transforms import pil_resize

        results = []
        for b, (image, (out_h, out_w)) in enumerate(zip(images, output_sizes, strict=True)):
            if self.image_size is not None:
                image = pil_resize(image, *self.image_size)
            in_h, in_w = image.shape[1:]
            boxes, scores, classes, count = self._run(self._inputs(image, prompt_ids))
            n = int(count[0])
            boxes = torch.from_numpy(boxes[0, :n].copy())
            scores = torch.from_numpy(scores[0, :n].copy())
            classes = torch.from_numpy(classes[0, :n].copy()).long()
            boxes = boxes * torch.tensor([out_w / in_w, out_h / in_h] * 2)
            keep = scores > score_threshold
            if allowed_classes is not None:
                keep &= torch.isin(classes, allowed_classes[b].cpu())
            keep[max_detections:] = False
            results.append(Detections(boxes[keep], scores[keep], classes[keep], (out_h, out_w)))
        return results
