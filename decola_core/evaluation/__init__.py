"""Evaluation: LVIS AP (standard and fixed protocols), conditioned mAP@k, prediction files."""

from decola_core.evaluation.lvis_eval import METRIC_KEYS, EvalResult, GroundTruth, evaluate
from decola_core.evaluation.predictions import Predictions

__all__ = ["METRIC_KEYS", "EvalResult", "GroundTruth", "Predictions", "evaluate"]
