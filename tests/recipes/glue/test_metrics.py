"""The offline GLUE metric, the GLUE table and the submission files, against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hf_lln.recipes.glue import (
    accuracy,
    f1,
    format_comparison_table,
    format_glue_table,
    get_task,
    glue_metric,
    glue_score,
    matthews_correlation,
    pearson,
    spearman,
    summarize_repeats,
    write_submission,
)

PREDICTIONS = [1, 0, 1, 1, 0]
REFERENCES = [1, 1, 0, 1, 0]  # TP 2, TN 1, FP 1, FN 1


def test_accuracy_and_f1():
    assert accuracy(PREDICTIONS, REFERENCES) == pytest.approx(3 / 5)
    assert f1(PREDICTIONS, REFERENCES) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1([0, 0], [0, 0]) == 0.0


def test_matthews_correlation():
    # (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 − 1) / sqrt(3·3·2·2)
    assert matthews_correlation(PREDICTIONS, REFERENCES) == pytest.approx(1 / 6)
    assert matthews_correlation([1, 0, 1], [0, 1, 0]) == pytest.approx(-1.0)
    assert matthews_correlation([1, 1, 1], [0, 1, 0]) == 0.0
    # three classes: trace 4 of 6, all marginals 2: (4·6 − 12) / (36 − 12)
    assert matthews_correlation([0, 2, 1, 0, 1, 2], [0, 1, 2, 0, 1, 2]) == pytest.approx(0.5)


def test_pearson_and_spearman():
    # deviations (−1.5, −.5, .5, 1.5) and (−3, −1, 0, 4): 11 / sqrt(5 · 26)
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130))
    # ranks with a tie (1, 2.5, 2.5, 4) against (1, 3, 2, 4): 4.5 / sqrt(4.5 · 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))


def test_glue_metric_names_per_task():
    assert set(glue_metric("cola", PREDICTIONS, REFERENCES)) == {"matthews_correlation"}
    assert glue_metric("mrpc", PREDICTIONS, REFERENCES) == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})
    assert set(glue_metric("stsb", [0.1, 2.0, 4.5], [0.0, 2.5, 5.0])) == {"pearson", "spearmanr"}
    assert glue_metric("mnli_mismatched", [0, 1, 2], [0, 1, 1]) == pytest.approx({"accuracy": 2 / 3})
    with pytest.raises(ValueError, match="task_name"):
        glue_metric("squad", [1], [1])
    with pytest.raises(ValueError, match="one length"):
        accuracy([1, 0], [1])


# BERT-large on the GLUE leaderboard (Devlin et al. 2019): its GLUE score is 80.5.
BERT_LARGE = {
    "cola": {"eval_matthews_correlation": 0.605},
    "sst2": {"eval_accuracy": 0.949},
    "mrpc": {"eval_f1": 0.893, "eval_accuracy": 0.854},
    "stsb": {"eval_pearson": 0.876, "eval_spearmanr": 0.865},
    "qqp": {"eval_f1": 0.721, "eval_accuracy": 0.893},
    "mnli": {"eval_accuracy": 0.867, "eval_accuracy_mm": 0.859},
    "qnli": {"eval_accuracy": 0.927},
    "rte": {"eval_accuracy": 0.701},
    "wnli": {"eval_accuracy": 0.651},
}


def test_glue_score_matches_the_leaderboard():
    assert glue_score(BERT_LARGE) == pytest.approx(0.80522, abs=1e-5)
    table = format_glue_table({name: BERT_LARGE[name] for name in ("mrpc", "sst2")})
    assert "| mrpc | acc 85.40 / f1 89.30 | 87.35 |" in table
    assert table.splitlines()[-1] == "| **GLUE average** (2 tasks) | | **91.12** |"
    assert glue_score({"mnli": {"eval_accuracy": 0.8}}) == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"hold none of \['matthews_correlation'\]"):
        glue_score({"cola": {"eval_accuracy": 0.8}})


def test_comparison_table_puts_attentions_side_by_side_over_seeds():
    mrpc = {"eval_accuracy": 0.9, "eval_f1": 0.8, "train_runtime": 30.0, "epochs": 2.0}
    wnli = {"eval_accuracy": 0.2, "train_runtime": 10.0, "epochs": 1.0}
    tasks = ("mrpc", "wnli")
    summaries = {
        "sdpa": summarize_repeats(
            [{"mrpc": mrpc, "wnli": wnli}, {"mrpc": {**mrpc, "eval_f1": 0.6}, "wnli": wnli}], tasks
        ),
        # the second seed's WNLI unfinished: left out of that seed's average and time
        "lln": summarize_repeats(
            [{"mrpc": {**mrpc, "eval_accuracy": 0.7}, "wnli": wnli}, {"mrpc": mrpc}], tasks
        ),
    }
    assert summaries["lln"]["average"] == pytest.approx({"mean": 0.75, "std": None, "n": 1})
    table = format_comparison_table(
        summaries, tasks, repeats=2, reference="sdpa", columns={"folder": {"sdpa": "`a`", "lln": "`b`"}}
    )
    # MRPC scores the mean of accuracy and F1; the average leaves WNLI out; s/epoch: 30 / 2 + 10 / 1
    assert table.splitlines() == [
        "| attention | mrpc | wnli | average | Δ average | s/epoch | folder |",
        "|---|---:|---:|---:|---:|---:|---|",
        "| sdpa | 80.00 ± 7.07 | 20.00 ± 0.00 | 80.00 ± 7.07 | +0.00 | 25.0 ± 0.0 | `a` |",
        "| lln | 80.00 ± 7.07 | 20.00 (n=1) | 75.00 (n=1) | -5.00 | 25.0 (n=1) | `b` |",
    ]


def test_submission_files_use_glue_names_and_labels(tmp_path):
    path = write_submission(get_task("mnli"), "test_mismatched", [1, 0], [2, 0], tmp_path)
    assert path.name == "MNLI-mm.tsv"
    assert path.read_text() == "index\tprediction\n0\tentailment\n1\tcontradiction\n"
    path = write_submission(get_task("wnli"), "test", [0, 1], [1, 0], tmp_path)
    assert path.read_text() == "index\tprediction\n0\t1\n1\t0\n"
    path = write_submission(get_task("stsb"), "test", [0, 1, 2], [5.7, -0.2, 2.25], tmp_path)
    assert path.name == "STS-B.tsv"
    assert path.read_text() == "index\tprediction\n0\t5.000\n1\t0.000\n2\t2.250\n"


def test_correlations_match_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        predictions = rng.integers(0, 5, 30).astype(float)
        references = np.round(rng.normal(size=30), 1)
        assert pearson(predictions, references) == pytest.approx(stats.pearsonr(predictions, references)[0])
        assert spearman(predictions, references) == pytest.approx(stats.spearmanr(predictions, references)[0])


@pytest.mark.slow
def test_the_metric_is_an_evaluate_module_that_loads_offline(tmp_path):
    """``evaluate.load`` of the packaged module, in a fresh process with an empty cache and the Hub offline."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, evaluate\n"
        "from hf_lln.recipes.glue.metrics import load_glue_metric\n"
        "metric = load_glue_metric('mrpc')\n"
        "assert isinstance(metric, evaluate.Metric), type(metric)\n"
        "print(json.dumps(metric.compute(predictions=[1, 0, 1], references=[1, 1, 1])))\n"
    )
    root = str(Path(__file__).resolve().parents[3])
    pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.update(PYTHONPATH=pythonpath)
    env.pop("HF_MODULES_CACHE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == pytest.approx({"accuracy": 2 / 3, "f1": 0.8})
    assert (tmp_path / "modules" / "evaluate_modules" / "metrics" / "glue_metric").is_dir()
