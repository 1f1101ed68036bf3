"""Complete, atomic training checkpoints: write to a temp file, rename, then update the pointer.

``model_<iter>.pth`` holds the model, optimizer, scheduler and scaler states, the iteration, the
data-planner state, RNG states, the recipe and the W&B run id. ``last_checkpoint`` names the
newest complete file; the oldest files beyond ``keep`` are deleted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from decola_core.errors import DecolaError
from decola_core.utils.io import atomic_open, atomic_write_text

log = logging.getLogger(__name__)
POINTER = "last_checkpoint"


class Checkpointer:
    def __init__(self, output_dir: Path, keep: int = 3) -> None:
        self.output_dir = Path(output_dir)
        self.keep = keep

    def save(self, name: str, state: dict[str, Any], *, pointer: bool = True) -> Path:
        path = self.output_dir / name
        with atomic_open(path, "wb") as handle:
            torch.save(state, handle)
        if pointer:
            atomic_write_text(self.output_dir / POINTER, name + "\n")
            self._prune()
        log.info("saved checkpoint %s", path)
        return path

    def _prune(self) -> None:
        periodic = sorted(self.output_dir.glob("model_[0-9]*.pth"))
        for old in periodic[: max(0, len(periodic) - self.keep)]:
            old.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint (the pointer's file, else the highest-numbered one)."""
        pointer = self.output_dir / POINTER
        if pointer.is_file():
            candidate = self.output_dir / pointer.read_text().strip()
            if candidate.is_file():
                return candidate
        periodic = sorted(self.output_dir.glob("model_[0-9]*.pth"))
        return periodic[-1] if periodic else None

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
            raise DecolaError(
                f"{path}: cannot read the checkpoint ({err}); delete it to resume "
                "from the previous one"
            ) from None
