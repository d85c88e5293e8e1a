"""GLUE: the nine tasks, loaders (Hub, GLUE TSV folder, csv/json), the offline metric and the GLUE tables.

>>> from hf_lln.recipes.glue import get_task, load_glue, glue_metric
>>> task = get_task("mrpc")
>>> splits = load_glue(task, glue_dir="glue")  # DatasetDict: train / validation / test
>>> glue_metric("mrpc", predictions=[1, 0, 1], references=[1, 1, 1])
{'accuracy': 0.666..., 'f1': 0.8}
"""

from hf_lln.recipes.glue.data import glue_features, load_glue, load_glue_files, load_glue_hub, load_glue_tsv
from hf_lln.recipes.glue.metrics import accuracy, f1, glue_metric, matthews_correlation, pearson, spearman
from hf_lln.recipes.glue.submission import write_submission
from hf_lln.recipes.glue.table import (
    averaged_tasks,
    format_comparison_table,
    format_glue_table,
    glue_score,
    summarize_repeats,
    task_score,
)
from hf_lln.recipes.glue.tasks import (
    GLUE_TASKS,
    HUB_DATASET,
    TASK_GROUPS,
    GlueTask,
    get_task,
    resolve_task_names,
)

__all__ = [
    "GLUE_TASKS",
    "HUB_DATASET",
    "TASK_GROUPS",
    "GlueTask",
    "accuracy",
    "averaged_tasks",
    "f1",
    "format_comparison_table",
    "format_glue_table",
    "get_task",
    "glue_features",
    "glue_metric",
    "glue_score",
    "load_glue",
    "load_glue_files",
    "load_glue_hub",
    "load_glue_tsv",
    "matthews_correlation",
    "pearson",
    "resolve_task_names",
    "spearman",
    "summarize_repeats",
    "task_score",
    "write_submission",
]
