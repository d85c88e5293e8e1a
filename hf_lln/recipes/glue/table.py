"""The GLUE table: per-task metrics, each task's score and their average, as GLUE scores them.

A task's score is the mean of its metrics (MRPC, QQP: accuracy and F1; STS-B: Pearson and
Spearman; MNLI: matched and mismatched accuracy); the GLUE score is the mean over tasks.
"""

from __future__ import annotations

from collections.abc import Mapping

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


def format_comparison_table(runs: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A Markdown table comparing runs side by side (e.g. one per attention): ``runs[name][task] = results``.

    Per task: one row per metric (in percent), then the training time per epoch in seconds
    (``train_runtime / epochs`` from the run's results) over its ``train_samples`` rows.
    """
    tasks = list(dict.fromkeys(task for results in runs.values() for task in results))
    lines = [f"| task | metric | {' | '.join(runs)} |", "|---|---|" + "---:|" * len(runs)]
    for task in tasks:
        metrics = {name: _task_metrics(task, run[task]) if task in run else {} for name, run in runs.items()}
        for metric in dict.fromkeys(key for values in metrics.values() for key in values):
            cells = [
                f"{100 * values[metric]:.2f}" if metric in values else "–" for values in metrics.values()
            ]
            lines.append(f"| {task} | {METRIC_LABELS[metric]} | {' | '.join(cells)} |")
        timed = [run.get(task, {}) for run in runs.values()]
        rows = sorted({int(results["train_samples"]) for results in timed if "train_samples" in results})
        cells = [f"{r['train_runtime'] / r['epochs']:.1f}" if r.get("epochs") else "–" for r in timed]
        label = f"s/epoch ({', '.join(map(str, rows))} rows)" if rows else "s/epoch"
        lines.append(f"| {task} | {label} | {' | '.join(cells)} |")
    return "\n".join(lines)
