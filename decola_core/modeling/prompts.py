"""Which classes a forward pass is conditioned on (spec §1.10, §1.14, §4.4).

- training: the GT classes of the per-GPU batch (plus image-level labels), sorted; a random
  class when the batch has none;
- conditioned evaluation (c-mAP, "oracle"): the GT classes of the batch, or object mode when
  there are none;
- an explicit class list, or every class in chunks (the vocabulary may not fit one pass).
"""

from __future__ import annotations

import torch

from decola_core.errors import InputError


def training_prompts(
    labels: list[torch.Tensor],
    num_classes: int,
    image_labels: list[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sorted unique classes of the batch; one random class if the batch has none."""
    parts = list(labels) + list(image_labels or [])
    present = torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.int64)
    if present.numel():
        return present
    return torch.randint(num_classes, (1,), generator=generator)


def oracle_prompts(labels: list[torch.Tensor]) -> torch.Tensor | None:
    """Sorted unique GT classes of the batch, or None (object mode) when there are none."""
    present = torch.unique(torch.cat(list(labels))) if labels else torch.zeros(0, dtype=torch.int64)
    return present if present.numel() else None


def prompt_chunks(classes: torch.Tensor, chunk: int) -> list[torch.Tensor]:
    """Split a long prompt list into passes of at most ``chunk`` prompts.

    The grouped decoder attention depends on the number of prompts in a pass, so chunked
    results are close to, not identical with, one pass over all prompts.
    """
    if chunk <= 0:
        raise InputError(f"chunk must be positive (got {chunk})")
    return list(torch.split(classes, chunk))
