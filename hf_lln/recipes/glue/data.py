"""GLUE loaders: the Hub dataset, a GLUE TSV folder, or csv/json files, all giving the Hub's form.

Each returns a ``datasets.DatasetDict`` keyed by the task's Hub split names (``train``, ``validation``,
``test``; MNLI: ``validation_matched``, ``validation_mismatched``, ``test_matched``, ``test_mismatched``)
with the columns ``*task.text_columns``, ``label`` and ``idx`` (see :mod:`hf_lln.recipes.glue.tasks`).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import datasets

from hf_lln.recipes.glue.tasks import COLA_HEADERLESS_COLUMNS, HUB_DATASET, GlueTask

logger = logging.getLogger(__name__)

NO_LABEL = -1
"""Label of unlabelled (test) rows, as on the Hub."""


def glue_features(task: GlueTask) -> datasets.Features:
    """The Hub's features for ``task``: text columns, ``label`` and ``idx``."""
    features = {column: datasets.Value("string") for column in task.text_columns}
    if task.is_regression:
        features["label"] = datasets.Value("float32")
    else:
        features["label"] = datasets.ClassLabel(names=list(task.label_names))
    features["idx"] = datasets.Value("int32")
    return datasets.Features(features)


def load_glue_hub(task: GlueTask, cache_dir: str | None = None) -> datasets.DatasetDict:
    """``task`` from the Hub dataset ``nyu-mll/glue`` (needs the Hub or a filled cache)."""
    return datasets.load_dataset(HUB_DATASET, task.name, cache_dir=cache_dir)


def load_glue_tsv(
    task: GlueTask, glue_dir: str | Path, splits: tuple[str, ...] | None = None
) -> datasets.DatasetDict:
    """``task`` from the original GLUE layout: ``glue_dir/<task.directory>/<file>`` per split.

    ``splits`` defaults to every split of the task whose file exists; train and the validation
    splits must exist. Rows lacking a text field or the label are skipped, as the Hub's conversion
    did (their ``idx`` stays unused); a header
    without the task's columns or a label outside the task's set raises ``ValueError``.
    """
    task_dir = Path(glue_dir) / task.directory
    if splits is None:
        required = ("train", *task.validation_splits)
        for split in required:
            path = task_dir / task.splits[split]
            if not path.is_file():
                raise FileNotFoundError(
                    f"glue_dir: {task.name} needs {path} (expected the GLUE layout "
                    f"<glue_dir>/{task.directory}/{{{', '.join(task.splits[s] for s in required)}}})"
                )
        splits = tuple(split for split in task.splits if (task_dir / task.splits[split]).is_file())
    unknown = [split for split in splits if split not in task.splits]
    if unknown:
        raise ValueError(f"splits: {task.name} has splits {list(task.splits)}, got {unknown}")
    features = glue_features(task)
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                _read_tsv_split(task, task_dir / task.splits[split], split), features=features
            )
            for split in splits
        }
    )


def _read_tsv_split(task: GlueTask, path: Path, split: str) -> dict[str, list]:
    if not path.is_file():
        raise FileNotFoundError(f"glue_dir: missing {path} for split {split!r} of {task.name}")
    # GLUE's TSVs are unquoted: a lone '"' is text; utf-8-sig strips the BOM of MRPC's header.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if split in task.headerless_splits:
            header = list(COLA_HEADERLESS_COLUMNS)
        else:
            header = next(reader, [])
        labelled = not split.startswith("test")
        needed = list(task.tsv_text_columns) + ([task.tsv_label_column] if labelled else [])
        missing = [column for column in needed if column not in header]
        if missing:
            raise ValueError(
                f"{path}: {task.name} {split} needs the columns {needed}, missing {missing} "
                f"(header: {header})"
            )
        text_positions = [header.index(column) for column in task.tsv_text_columns]
        label_position = header.index(task.tsv_label_column) if labelled else None
        last_used = max(position for position in (*text_positions, label_position) if position is not None)
        columns: dict[str, list] = {column: [] for column in (*task.text_columns, "label", "idx")}
        skipped = 0
        for row_index, row in enumerate(reader):
            if len(row) <= last_used or (label_position is not None and not row[label_position]):
                skipped += 1
                continue
            for column, position in zip(task.text_columns, text_positions, strict=True):
                columns[column].append(row[position])
            label = NO_LABEL if label_position is None else row[label_position]
            columns["label"].append(_parse_label(task, label, path, row_index))
            columns["idx"].append(row_index)
    if skipped:
        logger.warning("%s: skipped %d rows with missing fields", path, skipped)
    return columns


def _parse_label(task: GlueTask, raw: str | int, path: Path, row_index: int) -> int | float:
    if raw == NO_LABEL:
        return float(NO_LABEL) if task.is_regression else NO_LABEL
    if task.is_regression:
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not 0.0 <= score <= 5.0:
            raise ValueError(f"{path}, row {row_index}: {task.name} score {raw!r} is not a number in [0, 5]")
        return score
    if raw not in task.tsv_label_values:
        raise ValueError(
            f"{path}, row {row_index}: {task.name} label {raw!r} is not one of {list(task.tsv_label_values)}"
        )
    return task.tsv_label_values.index(raw)


def load_glue_files(task: GlueTask, data_files: Mapping[str, str | Path]) -> datasets.DatasetDict:
    """``task`` from csv or json(-lines) files, one per split (``{"train": path, "validation": path}``).

    Each file holds the task's Hub text columns and, except on test splits, ``label`` (the class id
    or its name; a float for STS-B); ``idx`` is kept when present, else the row number.
    """
    unknown = [split for split in data_files if split not in task.splits]
    if unknown:
        raise ValueError(f"data_files: {task.name} has splits {list(task.splits)}, got {unknown}")
    features = glue_features(task)
    loaded = {}
    for split, path in data_files.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{split} file {path} does not exist")
        builder = {".csv": "csv", ".json": "json", ".jsonl": "json"}.get(path.suffix)
        if builder is None:
            raise ValueError(f"{split} file {path}: expected a .csv, .json or .jsonl file")
        # csv text stays verbatim: no number parsing, and "NA"/"null"/"" are text, not missing values.
        options = (
            {"converters": dict.fromkeys(task.text_columns, str), "keep_default_na": False}
            if builder == "csv"
            else {}
        )
        raw = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
        needed = list(task.text_columns) + ([] if split.startswith("test") else ["label"])
        missing = [column for column in needed if column not in raw.column_names]
        if missing:
            raise ValueError(
                f"{split} file {path}: {task.name} needs the columns {needed}, missing {missing} "
                f"(found {raw.column_names})"
            )
        texts = {column: [str(value) for value in raw[column]] for column in task.text_columns}
        labels = raw["label"] if "label" in raw.column_names else [NO_LABEL] * len(raw)
        parsed = [_parse_file_label(task, label, path, row) for row, label in enumerate(labels)]
        if not split.startswith("test") and NO_LABEL in parsed:
            row = parsed.index(NO_LABEL)
            raise ValueError(f"{split} file {path}, row {row}: label -1 (unlabelled) in a labelled split")
        columns = {
            **texts,
            "label": parsed,
            "idx": raw["idx"] if "idx" in raw.column_names else list(range(len(raw))),
        }
        loaded[split] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(loaded)


def _parse_file_label(task: GlueTask, raw, path: Path, row_index: int) -> int | float:
    if task.is_regression:
        return _parse_label(task, str(raw) if raw != NO_LABEL else NO_LABEL, path, row_index)
    if isinstance(raw, str) and raw in task.label_names:
        return task.label_names.index(raw)
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():  # a csv column mixing names and ids
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and (raw == NO_LABEL or 0 <= raw < task.num_labels):
        return raw
    raise ValueError(
        f"{path}, row {row_index}: {task.name} label {raw!r} is not one of {list(task.label_names)} "
        f"or an id in [0, {task.num_labels})"
    )


def load_glue(
    task: GlueTask,
    *,
    glue_dir: str | Path | None = None,
    data_files: Mapping[str, str | Path] | None = None,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """``task`` from ``glue_dir`` (GLUE TSVs), ``data_files`` (csv/json) or else the Hub."""
    if glue_dir is not None and data_files:
        raise ValueError("give glue_dir or data_files (train/validation files), not both")
    if glue_dir is not None:
        return load_glue_tsv(task, glue_dir)
    if data_files:
        if "train" not in data_files or not any(split in data_files for split in task.validation_splits):
            raise ValueError(
                f"data_files: {task.name} needs a train and a validation file, got {list(data_files)}"
            )
        return load_glue_files(task, data_files)
    return load_glue_hub(task, cache_dir=cache_dir)
