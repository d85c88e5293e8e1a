"""GLUE loaders: every task from the GLUE TSV layout and from csv/json gives the Hub's examples and labels."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hf_lln.recipes.glue import (
    GLUE_TASKS,
    get_task,
    load_glue,
    load_glue_files,
    load_glue_tsv,
    resolve_task_names,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "glue"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
"""Hand-written Hub view of the fixtures: per split, rows of (*texts, label name / score / null, idx)."""


def as_rows(task, dataset) -> list[list]:
    """Rows of ``dataset`` as in expected.json: texts, label name (score for STS-B, None on test), idx."""
    rows = []
    for example in dataset:
        label = example["label"]
        if label == -1:
            label = None
        elif not task.is_regression:
            label = dataset.features["label"].int2str(label)
        rows.append([*(example[column] for column in task.text_columns), label, example["idx"]])
    return rows


def assert_same_rows(actual: list[list], expected: list[list]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got[:-2] == want[:-2] and got[-1] == want[-1]
        if isinstance(want[-2], float):
            assert got[-2] == pytest.approx(want[-2], abs=1e-6)
        else:
            assert got[-2] == want[-2]


@pytest.mark.parametrize("task_name", sorted(GLUE_TASKS))
def test_glue_dir_gives_the_hub_examples(task_name):
    task = get_task(task_name)
    splits = load_glue_tsv(task, FIXTURES)
    assert set(splits) == set(EXPECTED[task_name]) == set(task.splits)
    for split, rows in EXPECTED[task_name].items():
        assert list(splits[split].column_names) == [*task.text_columns, "label", "idx"]
        assert_same_rows(as_rows(task, splits[split]), rows)


def _write_files(task, tmp_path: Path, fmt: str) -> dict[str, Path]:
    """Write expected.json's rows as csv (labels by name) or json lines (labels by id, without idx)."""
    files = {}
    for split, rows in EXPECTED[task.name].items():
        records = []
        for row in rows:
            *texts, label, idx = row
            record = dict(zip(task.text_columns, texts, strict=True))
            if label is not None:
                record["label"] = (
                    label if fmt == "csv" or task.is_regression else task.label_names.index(label)
                )
            if fmt == "csv":
                record["idx"] = idx
            records.append(record)
        path = tmp_path / f"{split}.{fmt}"
        if fmt == "csv":
            import csv

            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
        else:
            path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
        files[split] = path
    return files


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("task_name", sorted(GLUE_TASKS))
def test_csv_and_json_give_the_same_examples_as_the_glue_dir(task_name, fmt, tmp_path):
    task = get_task(task_name)
    from_tsv = load_glue_tsv(task, FIXTURES)
    from_files = load_glue_files(task, _write_files(task, tmp_path, fmt))
    for split, rows in EXPECTED[task_name].items():
        assert from_files[split].features == from_tsv[split].features
        got = as_rows(task, from_files[split])
        if fmt == "json":  # without idx the row number stands in
            rows = [[*row[:-1], position] for position, row in enumerate(rows)]
        assert_same_rows(got, rows)


def test_task_names_and_groups():
    assert resolve_task_names("SST-2") == ("sst2",)
    assert resolve_task_names("paper") == ("mnli", "qnli", "qqp", "sst2")
    assert resolve_task_names("sst2, CoLA") == ("sst2", "cola")
    assert len(resolve_task_names("all")) == 9
    with pytest.raises(ValueError, match="task_name must be one of"):
        resolve_task_names("squad")


def _copy_task(task_dir: str, tmp_path: Path) -> Path:
    target = tmp_path / task_dir
    target.mkdir()
    for source in (FIXTURES / task_dir).iterdir():
        (target / source.name).write_bytes(source.read_bytes())
    return target


def test_missing_tsv_names_the_file(tmp_path):
    (_copy_task("RTE", tmp_path) / "dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"RTE/dev\.tsv"):
        load_glue(get_task("rte"), glue_dir=tmp_path)


def test_wrong_columns_are_named(tmp_path):
    path = _copy_task("QNLI", tmp_path) / "train.tsv"
    path.write_text(path.read_text().replace("question\t", "query\t", 1))
    with pytest.raises(ValueError, match=r"missing \['question'\]"):
        load_glue_tsv(get_task("qnli"), tmp_path)


def test_label_outside_the_task_set_is_rejected(tmp_path):
    path = _copy_task("MNLI", tmp_path) / "dev_matched.tsv"
    path.write_text(path.read_text().replace("\tcontradiction\n", "\tcontradicts\n"))
    with pytest.raises(ValueError, match="label 'contradicts' is not one of"):
        load_glue_tsv(get_task("mnli"), tmp_path)
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("sentence,label\ngood,1\nbad,2\n")
    with pytest.raises(ValueError, match=r"label 2 is not one of"):
        load_glue_files(get_task("sst2"), {"train": csv_path})
    csv_path.write_text("sentence,label\ngood,1\nbad,-1\n")
    with pytest.raises(ValueError, match=r"row 1: label -1 \(unlabelled\) in a labelled split"):
        load_glue_files(get_task("sst2"), {"train": csv_path})


def test_stsb_score_outside_0_5_is_rejected(tmp_path):
    path = _copy_task("STS-B", tmp_path) / "train.tsv"
    path.write_text(path.read_text().replace("\t4.800\n", "\t7.5\n"))
    with pytest.raises(ValueError, match=r"score '7.5' is not a number in \[0, 5\]"):
        load_glue_tsv(get_task("stsb"), tmp_path)


def test_csv_text_is_kept_verbatim(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sentence,label\n10 ,positive\nnull,negative\nNA,1\n")
    rows = load_glue_files(get_task("sst2"), {"train": path})["train"]
    assert rows["sentence"] == ["10 ", "null", "NA"]
    assert rows["label"] == [1, 0, 1]


def test_csv_without_the_task_columns_is_rejected(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\nhello,1\n")
    with pytest.raises(ValueError, match=r"needs the columns \['sentence', 'label'\]"):
        load_glue_files(get_task("cola"), {"train": path})


# Row counts and label counts of nyu-mll/glue (train, validation), label ids in the Hub's order.
REAL_TASKS = {
    "cola": {"train": {0: 2528, 1: 6023}, "validation": {0: 322, 1: 721}},
    "sst2": {"train": {0: 29780, 1: 37569}, "validation": {0: 428, 1: 444}},
    "mrpc": {"train": {0: 1194, 1: 2474}, "validation": {0: 129, 1: 279}},
    "wnli": {"train": {0: 323, 1: 312}, "validation": {0: 40, 1: 31}},
}
REAL_TEST_ROWS = {"cola": 1063, "sst2": 1821, "mrpc": 1725, "wnli": 146}


@pytest.mark.parametrize("task_name", sorted(REAL_TASKS))
def test_real_glue_tasks_load_with_the_hub_counts(task_name, data_dir):
    task = get_task(task_name)
    if not (data_dir / "glue" / task.directory).is_dir():
        pytest.skip(f"{task.directory} not in {data_dir / 'glue'}")
    splits = load_glue(task, glue_dir=data_dir / "glue")
    for split, counts in REAL_TASKS[task_name].items():
        assert dict(Counter(splits[split]["label"])) == counts
        assert splits[split]["idx"] == list(range(sum(counts.values())))
    assert len(splits["test"]) == REAL_TEST_ROWS[task_name]
    assert set(splits["test"]["label"]) == {-1}
