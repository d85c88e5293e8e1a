"""The GLUE metric through ``evaluate``, offline: the same names, definitions and values as
``evaluate.load("glue", task)``.

The metric module ships in this package (``glue_metric/glue_metric.py``, an ``evaluate.Metric`` computing
with scikit-learn and scipy as the Hub's ``glue`` metric does) and is loaded by its path, so no network is
needed (it works under ``HF_HUB_OFFLINE=1``): ``evaluate`` copies it into its modules cache
(``$HF_MODULES_CACHE``, by default under ``~/.cache/huggingface``) and imports it from there.

CoLA: ``matthews_correlation``; STS-B: ``pearson`` and ``spearmanr``; MRPC and QQP: ``accuracy`` and
``f1`` (of the positive class, label 1); every other task: ``accuracy``. All take ``predictions`` and
``references`` as sequences of class ids (floats for STS-B) of equal length.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hf_lln.recipes.glue.tasks import get_task

GLUE_METRIC_PATH = Path(__file__).with_name("glue_metric")


@functools.cache
def load_glue_metric(config_name: str):
    """The ``evaluate`` GLUE metric of one task (``evaluate.load`` of :data:`GLUE_METRIC_PATH`), loaded once
    per process; it keeps its inputs in memory, so processes of one run do not share cache files."""
    import evaluate

    return evaluate.load(str(GLUE_METRIC_PATH), config_name, keep_in_memory=True)


def glue_metric(task_name: str, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """The GLUE metric of ``task_name`` (``mnli_matched``/``mnli_mismatched`` count as ``mnli``)."""
    name = task_name.removesuffix("_matched").removesuffix("_mismatched")
    task = get_task(name)
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.ndim != 1 or predictions.shape != references.shape or predictions.size == 0:
        raise ValueError(
            "predictions and references must be non-empty 1-d sequences of one length, got shapes "
            f"{predictions.shape} and {references.shape}"
        )
    return load_glue_metric(task.name).compute(predictions=predictions, references=references)


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """The share of predictions equal to their reference (GLUE's SST-2 metric)."""
    return glue_metric("sst2", predictions, references)["accuracy"]


def f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """F1 of class 1: ``2·TP / (2·TP + FP + FN)``, 0 when there is no positive at all (GLUE's MRPC F1)."""
    return glue_metric("mrpc", predictions, references)["f1"]


def matthews_correlation(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Matthews correlation (multiclass form), 0 when either side is constant (GLUE's CoLA metric)."""
    return glue_metric("cola", predictions, references)["matthews_correlation"]


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson correlation, NaN when either side is constant (GLUE's STS-B ``pearson``)."""
    return glue_metric("stsb", predictions, references)["pearson"]


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Spearman correlation, ties given their average rank (GLUE's STS-B ``spearmanr``)."""
    return glue_metric("stsb", predictions, references)["spearmanr"]
