"""hf_lln.recipes.run_glue end to end on a tiny BERT: every task trains, evaluates, predicts and saves; and
hf_lln.recipes.glue_sweep, which runs it once per attention."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AttentionInterface,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import hf_lln
from hf_lln.recipes import glue_sweep, run_glue
from tests._tiny import character_bert

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "glue"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))

SUBMISSION_FILES = {
    "cola": ["CoLA.tsv"],
    "sst2": ["SST-2.tsv"],
    "mrpc": ["MRPC.tsv"],
    "stsb": ["STS-B.tsv"],
    "qqp": ["QQP.tsv"],
    "mnli": ["MNLI-m.tsv", "MNLI-mm.tsv"],
    "qnli": ["QNLI.tsv"],
    "rte": ["RTE.tsv"],
    "wnli": ["WNLI.tsv"],
}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 1-layer BERT (one head of 64, the head size LLN's moment constants cover) with a character vocabulary."""
    return character_bert(tmp_path_factory.mktemp("tiny_bert"))


def run(tiny_bert: Path, output_dir: Path, *flags: str) -> dict:
    """run_glue.run with a tiny batch and step size; ``flags`` may be whole flag strings ("--task_name rte")."""
    defaults = (
        "--per_device_train_batch_size 2 --per_device_eval_batch_size 2 --learning_rate 1e-3 --max_length 64"
    )
    argv = ["--model_name_or_path", str(tiny_bert), "--output_dir", str(output_dir), *defaults.split()]
    return run_glue.run(argv + [part for flag in flags for part in flag.split(" ")])


def test_all_nine_tasks_train_evaluate_predict_and_save(tiny_bert, tmp_path):
    results = run(tiny_bert, tmp_path, "--task_name all --max_train_steps 2", f"--glue_dir {FIXTURES}")
    assert list(results) == list(EXPECTED)
    expected_metrics = {
        "cola": {"eval_matthews_correlation"},
        "stsb": {"eval_pearson", "eval_spearmanr"},
        "mrpc": {"eval_accuracy", "eval_f1"},
        "qqp": {"eval_accuracy", "eval_f1"},
        "mnli": {"eval_accuracy", "eval_accuracy_mm"},
    }
    for task, task_results in results.items():
        task_dir = tmp_path / task
        saved = json.loads((task_dir / "all_results.json").read_text())
        assert saved == pytest.approx(task_results)
        assert {key for key in saved if key.startswith("eval_")} == expected_metrics.get(
            task, {"eval_accuracy"}
        )
        assert saved["train_steps"] == 2 and np.isfinite(saved["train_loss"])
        assert (task_dir / "model.safetensors").is_file()
        card = (task_dir / "README.md").read_text()
        assert "model-index" in card and f"config: {task}" in card
        assert (
            str(FIXTURES) not in card and "(the GLUE TSV files)" in card
        )  # no local path in a published card
        evaluations = [
            entry
            for entry in json.loads((task_dir / "log_history.json").read_text())
            if any(key.startswith("eval_") for key in entry)
        ]
        assert [entry["step"] for entry in evaluations] == [2]
        config = json.loads((task_dir / "config.json").read_text())
        if task == "stsb":
            assert config["problem_type"] == "regression" and len(config["id2label"]) == 1
        else:
            labels = [row[-2] for row in EXPECTED[task]["train"]]
            assert set(labels) <= set(config["label2id"])
        test_splits = [split for split in EXPECTED[task] if split.startswith("test")]
        for name, split in zip(SUBMISSION_FILES[task], test_splits, strict=True):
            rows = list(csv.reader((tmp_path / "submission" / name).open(), delimiter="\t"))
            assert rows[0] == ["index", "prediction"]
            assert [int(row[0]) for row in rows[1:]] == [row[-1] for row in EXPECTED[task][split]]
    table = json.loads((tmp_path / "glue_results.json").read_text())
    assert set(table) == set(EXPECTED)


def test_main_runs_in_process(tiny_bert, tmp_path):
    """The command's entry point, as ``python -m`` and the console script call it, here in this process."""
    argv = ["--model_name_or_path", str(tiny_bert), "--output_dir", str(tmp_path), "--task_name", "rte"]
    argv += ["--glue_dir", str(FIXTURES), "--max_train_steps", "1", "--per_device_train_batch_size", "2"]
    assert run_glue.main(argv) == 0
    assert json.loads((tmp_path / "all_results.json").read_text())["train_steps"] == 1
    assert set(json.loads((tmp_path / "glue_results.json").read_text())) == {"rte"}


def test_reported_metrics_match_the_saved_model(tiny_bert, tmp_path):
    """eval_accuracy/eval_f1 equal those recomputed by hand from the saved model's dev predictions."""
    results = run(tiny_bert, tmp_path, "--task_name mrpc --num_train_epochs 2", f"--glue_dir {FIXTURES}")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    dev = EXPECTED["mrpc"]["validation"]
    encoded = tokenizer(
        [r[0] for r in dev],
        [r[1] for r in dev],
        truncation=True,
        max_length=64,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        predictions = model(**encoded).logits.argmax(-1).numpy()
    references = np.array([model.config.label2id[r[2]] for r in dev])
    true_positives = int(((predictions == 1) & (references == 1)).sum())
    f1 = 2 * true_positives / ((predictions == 1).sum() + (references == 1).sum())
    assert results["mrpc"]["eval_accuracy"] == pytest.approx((predictions == references).mean())
    assert results["mrpc"]["eval_f1"] == pytest.approx(f1)
    assert results["mrpc"]["epochs"] == pytest.approx(2.0)
    history = json.loads((tmp_path / "log_history.json").read_text())
    evaluations = [entry for entry in history if "eval_accuracy" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4]  # after each epoch of 4 rows in batches of 2
    assert evaluations[-1]["eval_f1"] == results["mrpc"]["eval_f1"]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_files_train_stsb_as_regression(tiny_bert, tmp_path):
    def records(split):
        return [
            {"sentence1": a, "sentence2": b, "label": score} for a, b, score, _ in EXPECTED["stsb"][split]
        ]

    train = _write_csv(tmp_path / "train.csv", records("train"))
    dev = _write_csv(tmp_path / "dev.csv", records("validation"))
    out = tmp_path / "out"
    flags = f"--task_name stsb --train_file {train} --validation_file {dev} --max_train_samples 3 --max_train_steps 2"
    results = run(tiny_bert, out, flags)
    assert set(results["stsb"]) >= {"eval_pearson", "eval_spearmanr"}
    assert results["stsb"]["train_samples"] == 3
    assert not (out / "submission").exists()


def test_attn_implementation_reaches_the_model(tiny_bert, tmp_path):
    calls = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append(tuple(query.shape))
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("glue_test_recording", recording_attention)
    AttentionMaskInterface.register("glue_test_recording", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    flags = (
        f"--task_name rte --glue_dir {FIXTURES} --max_train_steps 1 --attn_implementation glue_test_recording"
    )
    run(tiny_bert, tmp_path, flags)
    # one layer: 2 training rows (1 batch), then 2 dev and 2 test rows (1 batch each)
    assert len(calls) == 3 and all(shape[0] == 2 for shape in calls)


@pytest.mark.parametrize("attention", ["lln", "lln_diag", "cheap_linear"])
def test_linear_attentions_fine_tune(tiny_bert, tmp_path, attention):
    if attention not in AttentionInterface._global_mapping:
        pytest.skip(f"attention {attention!r} is not registered by hf_lln")
    flags = f"--task_name sst2 --glue_dir {FIXTURES} --max_train_steps 2 --attn_implementation {attention}"
    results = run(tiny_bert, tmp_path, flags)
    assert 0.0 <= results["sst2"]["eval_accuracy"] <= 1.0


def test_stock_checkpoint_fine_tuned_with_an_hf_lln_attention_reloads_with_it(
    tiny_bert, tmp_path, monkeypatch
):
    sentences = [row[0] for row in EXPECTED["sst2"]["validation"]]
    trained = {}
    save_final_model = run_glue.save_final_model

    def record_then_save(accelerator, model, tokenizer, *args, **kwargs):
        unwrapped = accelerator.unwrap_model(model).eval()
        with torch.no_grad():
            trained["logits"] = unwrapped(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
        trained["class"] = type(unwrapped)
        return save_final_model(accelerator, model, tokenizer, *args, **kwargs)

    monkeypatch.setattr(run_glue, "save_final_model", record_then_save)
    run(
        tiny_bert,
        tmp_path,
        f"--task_name sst2 --glue_dir {FIXTURES} --max_train_steps 2 --attn_implementation lln",
    )
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is trained["class"] is hf_lln.LLNBertForSequenceClassification
    assert reloaded.config._attn_implementation == "lln"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    with torch.no_grad():
        logits = reloaded(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    assert torch.equal(logits, trained["logits"])
    assert "| `lln_variant` | `lln` |" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize(
    ("flags", "error", "match"),
    [
        (["--task_name", "squad"], ValueError, "task_name must be one of"),
        (
            ["--task_name", "cola,sst2", "--train_file", "x.csv", "--validation_file", "y.csv"],
            ValueError,
            "one task",
        ),
        (["--task_name", "cola", "--glue_dir", "/nonexistent/glue"], ValueError, "--glue_dir"),
        (["--task_name", "rte", "--glue_dir", "{empty}"], FileNotFoundError, r"RTE/train\.tsv"),
        (["--task_name", "rte", "--glue_dir", "{bad_columns}"], ValueError, r"missing \['sentence2'\]"),
        (["--task_name", "wnli", "--glue_dir", "{bad_label}"], ValueError, r"label '2' is not one of"),
    ],
)
def test_bad_input_fails_before_training(tiny_bert, tmp_path, flags, error, match):
    for name, (task_dir, edit) in {
        "empty": ("RTE", None),
        "bad_columns": ("RTE", ("sentence2\t", "hypothesis\t")),
        "bad_label": ("WNLI", ("\t0\n", "\t2\n")),
    }.items():
        folder = tmp_path / name / task_dir
        folder.mkdir(parents=True)
        if edit is not None:
            for source in (FIXTURES / task_dir).iterdir():
                (folder / source.name).write_text(source.read_text().replace(*edit))
    flags = [
        flag.format(**{name: tmp_path / name for name in ("empty", "bad_columns", "bad_label")})
        for flag in flags
    ]
    with pytest.raises(error, match=match):
        run(tiny_bert, tmp_path / "out", *flags)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        # a 256-position model: before, the first batch failed 19 frames deep in BERT's embeddings
        (
            ["--max_length", "2048"],
            "--max_length 2048 is larger than the 256 positions of --model_name_or_path",
        ),
        (
            ["--model_name_or_path", "/nonexistent/model"],
            "--model_name_or_path /nonexistent/model: no such file",
        ),
        (["--learning_rate", "nan"], "--learning_rate must be a finite number, got nan"),
        (["--attn_implementation", "lln_dag"], "'lln_dag' is not an attention implementation"),
    ],
)
def test_user_errors_fail_before_any_data_or_folder(tiny_bert, tmp_path, flags, match):
    with pytest.raises(ValueError, match=match):
        run(tiny_bert, tmp_path / "out", "--task_name rte", f"--glue_dir {FIXTURES}", *flags)
    assert not (tmp_path / "out").exists()


def test_a_run_into_a_used_folder_is_refused_and_writes_shareable_files(tiny_bert, tmp_path):
    """A GLUE run used to replace an MLM model's weights, config and card in the same folder."""
    flags = ["--task_name rte", f"--glue_dir {FIXTURES}", "--max_train_steps 1"]
    previous = os.umask(0o022)
    try:
        run(tiny_bert, tmp_path, *flags)
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir() if path.is_file()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
    weights = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="is not empty .*--overwrite_output_dir"):
        run(tiny_bert, tmp_path, *flags, "--learning_rate 1e-2")
    assert (tmp_path / "model.safetensors").read_bytes() == weights
    run(tiny_bert, tmp_path, *flags, "--learning_rate 1e-2", "--overwrite_output_dir")
    assert (tmp_path / "model.safetensors").read_bytes() != weights


def test_sweep_prints_attentions_side_by_side(tiny_bert, tmp_path):
    argv = [
        "--model_name_or_path",
        str(tiny_bert),
        "--glue_dir",
        str(FIXTURES),
        "--output_dir",
        str(tmp_path),
    ]
    argv += "--tasks mrpc --attentions sdpa eager --num_train_epochs 1 --warmup_steps 1 -- --max_length 32".split()
    table = glue_sweep.run(argv)
    lines = table.splitlines()
    # the table compare writes: task scores, average, its difference to softmax (sdpa), time per epoch
    assert lines[0] == "| attention | mrpc | average | Δ average | s/epoch |"
    rows = {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    }
    assert list(rows) == ["sdpa", "eager"] and rows["sdpa"][2] == "+0.00"
    eager = json.loads((tmp_path / "eager" / "all_results.json").read_text())
    score = f"{100 * (eager['eval_accuracy'] + eager['eval_f1']) / 2:.2f}"
    assert rows["eager"][:2] == [score, score]
    assert rows["eager"][3] == f"{eager['train_runtime'] / eager['epochs']:.1f}"
    assert (tmp_path / "comparison.md").read_text() == table + "\n"
    assert json.loads((tmp_path / "warmup" / "eager" / "all_results.json").read_text())["train_steps"] == 1
