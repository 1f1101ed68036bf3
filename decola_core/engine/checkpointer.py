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

    def load_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that reads completely, with its state. A damaged newest file
        (a kill or a full disk while it was written) is skipped, saying so, for the one
        before it; temporary files of interrupted writes are removed."""
        leftovers = [
            *self.output_dir.glob(".model_*.pth.*.tmp"),
            *self.output_dir.glob(f".{POINTER}.*.tmp"),
        ]
        for stale in leftovers:
            log.warning("removing %s, left by an interrupted checkpoint write", stale)
            stale.unlink(missing_ok=True)
        newest = self.latest()
        candidates = sorted(self.output_dir.glob("model_[0-9]*.pth"), reverse=True)
        if newest is not None and newest in candidates:
            candidates.remove(newest)
        candidates = [newest, *candidates] if newest is not None else candidates
        for number, path in enumerate(candidates):
            try:
                state = self.load(path)
            except DecolaError as err:
                log.warning("%s; trying the checkpoint before it", err)
                continue
            if number:
                log.warning("resuming from %s, the newest complete checkpoint", path)
            return path, state
        return None

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
            raise DecolaError(
                f"{path}: cannot read the checkpoint ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else 'damaged'})"
            ) from None
