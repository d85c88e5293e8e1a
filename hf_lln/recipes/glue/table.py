"""The GLUE tables: one run's per-task metrics, each task's score and their average, as GLUE scores them; and
fine-tunings compared side by side (``glue_sweep`` and ``hf_lln.experiments.compare`` write the same table).

A task's score is the mean of its metrics (MRPC, QQP: accuracy and F1; STS-B: Pearson and
Spearman; MNLI: matched and mismatched accuracy); the GLUE score is the mean over tasks.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from hf_lln.recipes.glue.tasks import get_task

METRIC_LABELS = {
    "matthews_correlation": "mcc",
    "accuracy": "acc",
    "f1": "f1",
    "pearson": "pearson",
    "spearmanr": "spearman",
    "accuracy_mm": "acc-mm",
}
"""Short names of the metrics in the table, in the order they are shown."""


def _task_metrics(task_name: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """The GLUE metrics of ``task_name`` present in ``metrics`` (``eval_`` prefixes dropped).

    All are expected; MNLI without a mismatched set (csv/json data) scores its matched accuracy.
    """
    plain = {key.removeprefix("eval_"): float(value) for key, value in metrics.items()}
    expected = {
        "cola": ("matthews_correlation",),
        "stsb": ("pearson", "spearmanr"),
        "mrpc": ("accuracy", "f1"),
        "qqp": ("accuracy", "f1"),
        "mnli": ("accuracy", "accuracy_mm"),
    }.get(get_task(task_name).name, ("accuracy",))
    present = {name: plain[name] for name in expected if name in plain}
    if not present:
        raise ValueError(f"metrics for {task_name} hold none of {list(expected)} (got {sorted(plain)})")
    return present


def task_score(task_name: str, metrics: Mapping[str, float]) -> float:
    """The GLUE score of one task: the mean of its metrics."""
    values = list(_task_metrics(task_name, metrics).values())
    return sum(values) / len(values)


def glue_score(results: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE score: the mean of the task scores in ``results`` (task name -> metrics)."""
    if not results:
        raise ValueError("results must hold at least one task")
    return sum(task_score(task, metrics) for task, metrics in results.items()) / len(results)


def format_glue_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table: one row per task (metrics and score, in percent) and the average."""
    lines = ["| task | metrics | score |", "|---|---|---:|"]
    for task, metrics in results.items():
        shown = " / ".join(
            f"{METRIC_LABELS[name]} {100 * value:.2f}" for name, value in _task_metrics(task, metrics).items()
        )
        lines.append(f"| {get_task(task).name} | {shown} | {100 * task_score(task, metrics):.2f} |")
    count = f"{len(results)} task" + ("s" if len(results) > 1 else "")
    lines.append(f"| **GLUE average** ({count}) | | **{100 * glue_score(results):.2f}** |")
    return "\n".join(lines)


# WNLI's dev set is adversarial to its training set (models score below its majority class); like BERT's
# paper, the average of a comparison leaves it out when other tasks are there.
UNAVERAGED_TASKS = ("wnli",)


def averaged_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """The tasks that enter a comparison's average: all but ``UNAVERAGED_TASKS``, unless nothing else is left."""
    kept = tuple(task for task in tasks if task not in UNAVERAGED_TASKS)
    return kept or tuple(tasks)


def _spread(values: Sequence[float]) -> dict[str, float | int | None] | None:
    """Mean, sample std (None for one value) and count; None for no value."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def summarize_repeats(
    repeats: Sequence[Mapping[str, Mapping[str, float]]], tasks: Sequence[str]
) -> dict[str, dict[str, float | int | None] | None]:
    """The spread (mean, sample std, count) over repeats of the same fine-tuning (one per seed) of the figures
    a comparison shows; ``repeats[i][task]`` holds one run's results (``all_results.json``), a missing task
    is an unfinished run.

    Keys: each task (its GLUE score), ``average`` (per repeat, the mean score over :func:`averaged_tasks`) and
    ``seconds_per_epoch`` (per repeat, ``train_runtime / epochs`` summed over the tasks: one epoch of each).
    The last two take the repeats that hold every task.
    """
    summary = {
        task: _spread([task_score(task, repeat[task]) for repeat in repeats if task in repeat])
        for task in tasks
    }
    complete = [repeat for repeat in repeats if all(task in repeat for task in tasks)]
    summary["average"] = _spread(
        [
            statistics.fmean(task_score(task, repeat[task]) for task in averaged_tasks(tasks))
            for repeat in complete
        ]
    )
    summary["seconds_per_epoch"] = _spread(
        [sum(repeat[task]["train_runtime"] / repeat[task]["epochs"] for task in tasks) for repeat in complete]
    )
    return summary


def _cell(spread: Mapping[str, float | int | None] | None, repeats: int, scale: float, digits: int) -> str:
    if spread is None:
        return "–"
    text = f"{scale * spread['mean']:.{digits}f}"
    if spread["std"] is not None:
        text += f" ± {scale * spread['std']:.{digits}f}"
    if spread["n"] < repeats:
        text += f" (n={spread['n']})"
    return text


def format_comparison_table(
    summaries: Mapping[str, Mapping[str, Mapping[str, float | int | None] | None]],
    tasks: Sequence[str],
    *,
    repeats: int = 1,
    reference: str | None = None,
    columns: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """A Markdown table of fine-tunings side by side, one row per attention (``summaries[name]``, from
    :func:`summarize_repeats`).

    Cells: each task's score and the average in percent, and the training seconds per epoch of all tasks, as
    mean ± sample std over the repeats, with ``(n=k)`` where fewer than ``repeats`` finished; ``Δ average``:
    the row's average minus that of row ``reference`` (e.g. softmax), in points. ``columns`` appends the
    caller's own columns: header -> row name -> cell.
    """
    columns = columns or {}
    lines = [
        f"| attention | {' | '.join(tasks)} | average | Δ average | s/epoch |"
        + "".join(f" {header} |" for header in columns),
        "|---|" + "---:|" * (len(tasks) + 3) + "---|" * len(columns),
    ]
    baseline = summaries[reference]["average"] if reference is not None else None
    for name, summary in summaries.items():
        average = summary["average"]
        delta = f"{100 * (average['mean'] - baseline['mean']):+.2f}" if average and baseline else "–"
        cells = [
            *(_cell(summary[task], repeats, 100, 2) for task in tasks),
            _cell(average, repeats, 100, 2),
            delta,
            _cell(summary["seconds_per_epoch"], repeats, 1, 1),
            *(cells_of[name] for cells_of in columns.values()),
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)
