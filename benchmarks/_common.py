"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_reference_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--reference-dir``: the original model's reference outputs (``DECOLA_REFERENCE_DIR``,
    else ``../shared/reference`` beside the checkout)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "reference"
    parser.add_argument(
        "--reference-dir", type=Path, default=Path(os.environ.get("DECOLA_REFERENCE_DIR", default))
    )
