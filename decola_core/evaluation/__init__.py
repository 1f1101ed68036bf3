"""Evaluation: LVIS AP (standard and fixed protocols), conditioned mAP@k, prediction files.

The names below load their module on first use, so reading a predictions file (the pseudo-label
chain) does not pay for the evaluators.
"""

from importlib import import_module

_WHERE = {
    "METRIC_KEYS": "decola_core.evaluation.lvis_eval",
    "EvalResult": "decola_core.evaluation.lvis_eval",
    "GroundTruth": "decola_core.evaluation.lvis_eval",
    "evaluate": "decola_core.evaluation.lvis_eval",
    "Predictions": "decola_core.evaluation.predictions",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'decola_core.evaluation' has no attribute {name!r}")
