"""``run_evaluation(job)``: what ``decola eval`` (and ``decola train --eval-only``) does — score a
results file (:mod:`~decola_core.evaluation.scoring`), or run a model over a dataset and score
its predictions (:mod:`~decola_core.evaluation.model_run`)."""

from __future__ import annotations

from decola_core.errors import ConfigError
from decola_core.evaluation.scoring import EvalReport, score_predictions
from decola_core.jobs import EvalJob


def run_evaluation(job: EvalJob) -> EvalReport | None:
    """Score a results file or run a model and score it; the report on the main process.
    A model run writes ``log.txt`` beside its predictions."""
    if job.predictions is not None:
        if job.annotations is None:
            raise ConfigError("--predictions needs --annotations (the ground truth)")
        return score_predictions(job, job.predictions, job.annotations, job.output)
    if job.weights is None or job.recipe is None:
        raise ConfigError(
            "give --predictions FILE to score a results file, or --weights to run a model"
        )
    # torch and the model only for model runs: scoring a file starts in a fraction of a second
    from decola_core.evaluation.model_run import run_model

    return run_model(job)
