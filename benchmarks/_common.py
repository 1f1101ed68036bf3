"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def add_reference_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--reference-dir``: the original model's reference outputs (``DECOLA_REFERENCE_DIR``,
    else ``../shared/reference`` beside the checkout)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "reference"
    parser.add_argument(
        "--reference-dir", type=Path, default=Path(os.environ.get("DECOLA_REFERENCE_DIR", default))
    )


def run_child(script: str, *args: str) -> dict:
    """Run ``script`` again in a fresh process (so its peak memory and imports are its own) and
    return the JSON object it prints last."""
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])
