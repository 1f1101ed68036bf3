"""decola: train, evaluate and run DECOLA open-vocabulary object detectors.

The core library. It is importable without the command-line layer and
imports heavy dependencies (torch, timm, open_clip) only inside the modules that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("decola")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    if name == "Detector":  # imported on first use: it pulls in torch
        from decola_core.api import Detector

        return Detector
    raise AttributeError(f"module 'decola_core' has no attribute {name!r}")
