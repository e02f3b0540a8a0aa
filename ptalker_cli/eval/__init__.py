"""Evaluation: the paper's metrics (LVE, FDD) plus MVE, under an explicit protocol.

::

    from ptalker_cli.eval import evaluate, evaluate_predictions, write_results
    result = evaluate("tiny", "data/biwi", "test-a")          # predicts with the model
    result = evaluate_predictions("preds/", "data/biwi", "test-a")   # scores .npy files
    write_results(result, "results/")

See docs/evaluation.md. The metric functions themselves are in
:mod:`ptalker_cli.eval.metrics` (pure numpy; torch tensors accepted).
"""

from __future__ import annotations

from .metrics import (
    MetricError,
    Truncation,
    dynamics,
    fdd,
    fdd_abs_mean,
    fdd_mean,
    lve,
    lve_per_frame,
    lve_pooled,
    mve,
    mve_per_frame,
    mve_pooled,
    truncate,
)
from .paper import TABLE1, TABLE2, TABLE4, TABLES
from .predictions import evaluate_predictions
from .protocol import (
    UNSEEN_STYLES,
    EvalResult,
    SequenceResult,
    aggregate,
    evaluate,
    score_sequence,
)
from .report import print_report, write_results

__all__ = [
    "EvalResult",
    "MetricError",
    "SequenceResult",
    "TABLE1",
    "TABLE2",
    "TABLE4",
    "TABLES",
    "Truncation",
    "UNSEEN_STYLES",
    "aggregate",
    "dynamics",
    "evaluate",
    "evaluate_predictions",
    "fdd",
    "fdd_abs_mean",
    "fdd_mean",
    "lve",
    "lve_per_frame",
    "lve_pooled",
    "mve",
    "mve_per_frame",
    "mve_pooled",
    "print_report",
    "score_sequence",
    "truncate",
    "write_results",
]
