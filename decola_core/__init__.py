"""decola: train, evaluate and run DECOLA open-vocabulary object detectors.

The core library. It is importable without the command-line layer and
imports heavy dependencies (torch, timm, open_clip) only inside the modules that need them.
"""

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    if name == "Detector":  # imported on first use: it pulls in torch
        from decola_core.api import Detector

        return Detector
    if name == "__version__":  # importlib.metadata costs start-up time: asked for rarely
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("decola")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0.0.0+unknown"
    raise AttributeError(f"module 'decola_core' has no attribute {name!r}")
