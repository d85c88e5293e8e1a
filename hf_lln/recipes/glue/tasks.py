"""The nine GLUE tasks: columns, labels and files, as the Hub dataset ``nyu-mll/glue`` and GLUE's TSVs lay them out.

Every loader in :mod:`hf_lln.recipes.glue.data` turns its source into the Hub's form: the task's text columns
(``sentence``, ``premise``/``hypothesis``, ...), ``label`` (a ``ClassLabel`` in the Hub's order, float for
STS-B, -1 on test splits) and ``idx`` (the row's position in its file).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HUB_DATASET = "nyu-mll/glue"

COLA_HEADERLESS_COLUMNS = ("source", "label", "original_label", "sentence")
"""CoLA's train/dev TSVs have no header: these are their four columns."""


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    ``splits`` maps each Hub split name to its file in the GLUE TSV layout (``<directory>/<file>``);
    ``tsv_text_columns`` / ``tsv_label_column`` name the TSV columns that hold the Hub's text columns and
    the label; ``tsv_label_values[i]`` is how label ``i`` is written in the TSV.
    """

    name: str
    directory: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None
    tsv_text_columns: tuple[str, ...]
    tsv_label_column: str
    tsv_label_values: tuple[str, ...] | None
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    )
    submission_files: dict[str, str] = field(default_factory=dict)
    headerless_splits: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def validation_splits(self) -> tuple[str, ...]:
        return tuple(split for split in self.splits if split.startswith("validation"))

    @property
    def test_splits(self) -> tuple[str, ...]:
        return tuple(split for split in self.splits if split.startswith("test"))

    def metric_suffix(self, split: str) -> str:
        """Suffix of the metric names for ``split``: ``_mm`` on MNLI mismatched, as Transformers' run_glue."""
        return "_mm" if split.endswith("_mismatched") else ""


def _task(name: str, directory: str, **kwargs) -> GlueTask:
    kwargs.setdefault("submission_files", {"test": f"{directory}.tsv"})
    return GlueTask(name=name, directory=directory, **kwargs)


_BINARY_DIGITS = ("0", "1")
_MNLI_SPLITS = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}

GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        _task(
            "cola",
            "CoLA",
            text_columns=("sentence",),
            label_names=("unacceptable", "acceptable"),
            tsv_text_columns=("sentence",),
            tsv_label_column="label",
            tsv_label_values=_BINARY_DIGITS,
            headerless_splits=("train", "validation"),
        ),
        _task(
            "sst2",
            "SST-2",
            text_columns=("sentence",),
            label_names=("negative", "positive"),
            tsv_text_columns=("sentence",),
            tsv_label_column="label",
            tsv_label_values=_BINARY_DIGITS,
        ),
        _task(
            "mrpc",
            "MRPC",
            text_columns=("sentence1", "sentence2"),
            label_names=("not_equivalent", "equivalent"),
            tsv_text_columns=("#1 String", "#2 String"),
            tsv_label_column="Quality",
            tsv_label_values=_BINARY_DIGITS,
        ),
        _task(
            "stsb",
            "STS-B",
            text_columns=("sentence1", "sentence2"),
            label_names=None,
            tsv_text_columns=("sentence1", "sentence2"),
            tsv_label_column="score",
            tsv_label_values=None,
        ),
        _task(
            "qqp",
            "QQP",
            text_columns=("question1", "question2"),
            label_names=("not_duplicate", "duplicate"),
            tsv_text_columns=("question1", "question2"),
            tsv_label_column="is_duplicate",
            tsv_label_values=_BINARY_DIGITS,
        ),
        _task(
            "mnli",
            "MNLI",
            text_columns=("premise", "hypothesis"),
            label_names=("entailment", "neutral", "contradiction"),
            tsv_text_columns=("sentence1", "sentence2"),
            tsv_label_column="gold_label",
            tsv_label_values=("entailment", "neutral", "contradiction"),
            splits=_MNLI_SPLITS,
            submission_files={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
        ),
        _task(
            "qnli",
            "QNLI",
            text_columns=("question", "sentence"),
            label_names=("entailment", "not_entailment"),
            tsv_text_columns=("question", "sentence"),
            tsv_label_column="label",
            tsv_label_values=("entailment", "not_entailment"),
        ),
        _task(
            "rte",
            "RTE",
            text_columns=("sentence1", "sentence2"),
            label_names=("entailment", "not_entailment"),
            tsv_text_columns=("sentence1", "sentence2"),
            tsv_label_column="label",
            tsv_label_values=("entailment", "not_entailment"),
        ),
        _task(
            "wnli",
            "WNLI",
            text_columns=("sentence1", "sentence2"),
            label_names=("not_entailment", "entailment"),
            tsv_text_columns=("sentence1", "sentence2"),
            tsv_label_column="label",
            tsv_label_values=_BINARY_DIGITS,
        ),
    )
}

TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(GLUE_TASKS),
    "paper": ("mnli", "qnli", "qqp", "sst2"),
}
"""Names that stand for several tasks: ``all`` nine, and the four the LLN paper reports."""


def get_task(name: str) -> GlueTask:
    """The task called ``name`` (case-insensitive; ``sst-2``/``sts-b`` spellings accepted)."""
    key = name.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"task_name must be one of {sorted(GLUE_TASKS)}, got {name!r}")
    return GLUE_TASKS[key]


def resolve_task_names(name: str) -> tuple[str, ...]:
    """Task names for ``--task_name``: one task, ``all``, ``paper``, or a comma-separated list of tasks."""
    if name.lower() in TASK_GROUPS:
        return TASK_GROUPS[name.lower()]
    names = []
    for part in name.split(","):
        try:
            names.append(get_task(part.strip()).name)
        except ValueError:
            raise ValueError(
                f"task_name must be one of {sorted(GLUE_TASKS)}, {sorted(TASK_GROUPS)} or a comma-separated "
                f"list of tasks, got {name!r}"
            ) from None
    if len(set(names)) != len(names):
        raise ValueError(f"task_name lists a task twice: {name!r}")
    return tuple(names)
