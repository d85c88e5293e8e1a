"""The GLUE metric, offline: the same names and values as ``evaluate.load("glue", task)``.

CoLA: ``matthews_correlation``; STS-B: ``pearson`` and ``spearmanr``; MRPC and QQP: ``accuracy`` and
``f1`` (of the positive class, label 1); every other task: ``accuracy``. All take ``predictions`` and
``references`` as sequences of class ids (floats for STS-B) of equal length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hf_lln.recipes.glue.tasks import get_task


def _as_arrays(predictions: Sequence, references: Sequence) -> tuple[np.ndarray, np.ndarray]:
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.ndim != 1 or predictions.shape != references.shape or predictions.size == 0:
        raise ValueError(
            "predictions and references must be non-empty 1-d sequences of one length, got shapes "
            f"{predictions.shape} and {references.shape}"
        )
    return predictions, references


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    predictions, references = _as_arrays(predictions, references)
    return float((predictions == references).mean())


def f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """F1 of class 1: ``2·TP / (2·TP + FP + FN)``, 0 when there is no positive at all."""
    predictions, references = _as_arrays(predictions, references)
    true_positives = np.sum((predictions == 1) & (references == 1))
    denominator = np.sum(predictions == 1) + np.sum(references == 1)
    return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_correlation(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Matthews correlation (Gorodkin's multiclass form), 0 when either side is constant."""
    predictions, references = _as_arrays(predictions, references)
    classes = np.union1d(predictions, references)
    confusion = np.zeros((classes.size, classes.size), dtype=np.float64)
    np.add.at(confusion, (np.searchsorted(classes, references), np.searchsorted(classes, predictions)), 1)
    samples = confusion.sum()
    correct = np.trace(confusion)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    covariance = correct * samples - true_counts @ predicted_counts
    denominator = np.sqrt(
        (samples**2 - predicted_counts @ predicted_counts) * (samples**2 - true_counts @ true_counts)
    )
    return float(covariance / denominator) if denominator else 0.0


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson correlation (NaN when either side is constant, as scipy gives)."""
    predictions, references = _as_arrays(predictions, references)
    x = predictions.astype(np.float64) - predictions.mean(dtype=np.float64)
    y = references.astype(np.float64) - references.mean(dtype=np.float64)
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator else math.nan


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions (scipy's ``rankdata(method="average")``)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse.reshape(-1)]


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Spearman correlation: the Pearson correlation of the average ranks."""
    predictions, references = _as_arrays(predictions, references)
    return pearson(average_ranks(predictions), average_ranks(references))


def glue_metric(task_name: str, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """The GLUE metric of ``task_name`` (``mnli_matched``/``mnli_mismatched`` count as ``mnli``)."""
    name = task_name.removesuffix("_matched").removesuffix("_mismatched")
    task = get_task(name)
    if task.name == "cola":
        return {"matthews_correlation": matthews_correlation(predictions, references)}
    if task.name == "stsb":
        return {"pearson": pearson(predictions, references), "spearmanr": spearman(predictions, references)}
    if task.name in ("mrpc", "qqp"):
        return {"accuracy": accuracy(predictions, references), "f1": f1(predictions, references)}
    return {"accuracy": accuracy(predictions, references)}
