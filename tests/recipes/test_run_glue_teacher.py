"""hf_lln.recipes.run_glue --teacher_model_name_or_path: fine-tuned conversion (attention transfer + distillation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from hf_lln.convert import convert_checkpoint
from hf_lln.recipes import run_glue
from hf_lln.transfer import layers_loss
from tests._tiny import character_bert

FIXTURES = Path(__file__).parents[2] / "tests" / "fixtures" / "glue"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 1-layer BERT with a character vocabulary and sharp attention (``tests._tiny.character_bert``)."""
    return character_bert(tmp_path_factory.mktemp("tiny_bert"), sharp=True)


COMMON = "--per_device_train_batch_size 2 --per_device_eval_batch_size 2 --max_length 64"


def run(output_dir: Path, *flags: str) -> dict:
    argv = ["--output_dir", str(output_dir), *COMMON.split()]
    return run_glue.run(argv + [part for flag in flags for part in flag.split(" ")])


@pytest.fixture(scope="module")
def teacher(tiny_bert, tmp_path_factory) -> Path:
    """A softmax MRPC classifier fine-tuned on the fixture by run_glue."""
    folder = tmp_path_factory.mktemp("teacher")
    run(
        folder,
        f"--model_name_or_path {tiny_bert}",
        f"--task_name mrpc --glue_dir {FIXTURES}",
        "--num_train_epochs 20 --learning_rate 3e-3",
    )
    return folder


def teacher_divergence(teacher: Path, student: Path) -> float:
    """Mean KL(teacher ‖ student) of the predicted label distributions on every fixture MRPC pair."""
    rows = [row for split in ("train", "validation", "test") for row in EXPECTED["mrpc"][split]]
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    inputs = tokenizer([r[0] for r in rows], [r[1] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = [
            AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=attention)
            .eval()(**inputs)
            .logits
            for folder, attention in ((teacher, "sdpa"), (student, "lln"))
        ]
    return F.kl_div(
        logits[1].log_softmax(-1), logits[0].log_softmax(-1), log_target=True, reduction="batchmean"
    ).item()


def test_transferred_student_agrees_with_its_teacher_better_than_untransferred_ones(teacher, tmp_path):
    """End to end on the MRPC fixture: the transferred and distilled student predicts the teacher's label
    distributions far more closely than the untransferred students (the plain conversion fine-tuned on the task
    loss, and the same distillation without transfer)."""
    same = f"--task_name mrpc --glue_dir {FIXTURES} --attn_implementation lln --num_train_epochs 4 --learning_rate 1e-3"
    plain = run(tmp_path / "plain", f"--model_name_or_path {teacher}", same)
    untransferred = run(
        tmp_path / "untransferred",
        f"--teacher_model_name_or_path {teacher}",
        same,
        "--transfer_steps 0 --transfer_end_to_end_steps 0 --distill_alpha 0.9",
    )
    transferred = run(
        tmp_path / "transferred",
        f"--teacher_model_name_or_path {teacher}",
        same,
        "--transfer_steps 30 --transfer_end_to_end_steps 0 --transfer_learning_rate 1e-2 --distill_alpha 0.9",
        "--transfer_batch_size 2",
    )
    assert "eval_teacher_agreement" not in plain["mrpc"]
    # the conversion's cost is reported beside the fine-tuning's, where a transfer ran
    assert "transfer_runtime" not in untransferred["mrpc"] and transferred["mrpc"]["transfer_runtime"] > 0
    for results in (untransferred, transferred):
        assert 0.0 <= results["mrpc"]["eval_teacher_agreement"] <= 1.0
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "transferred")
    assert (type(reloaded).__name__, reloaded.config._attn_implementation) == (
        "LLNBertForSequenceClassification",
        "lln",
    )
    card = (tmp_path / "transferred" / "README.md").read_text()
    assert (
        f"fine-tuned softmax teacher `{teacher.name}` (a local folder)" in card and str(teacher) not in card
    )
    assert "30 layer-by-layer steps" in card and "the mrpc training inputs" in card
    divergence = {name: teacher_divergence(teacher, tmp_path / name) for name in ("plain", "untransferred")}
    assert teacher_divergence(teacher, tmp_path / "transferred") < 0.1 * min(divergence.values()), divergence


def test_teacher_without_transfer_still_distils(teacher, tmp_path):
    results = run(
        tmp_path,
        f"--teacher_model_name_or_path {teacher} --task_name mrpc --glue_dir {FIXTURES}",
        "--attn_implementation lln_diag --max_train_steps 2 --transfer_steps 0 --transfer_end_to_end_steps 0",
    )
    assert "eval_teacher_agreement" in results["mrpc"]
    assert "No attention transfer." in (tmp_path / "README.md").read_text()


def hidden_state_error(teacher: Path, student: Path) -> float:
    """``layers_loss`` of the student's hidden states to the teacher's on every fixture MRPC pair."""
    rows = [row for split in ("train", "validation", "test") for row in EXPECTED["mrpc"][split]]
    inputs = AutoTokenizer.from_pretrained(teacher)(
        [r[0] for r in rows], [r[1] for r in rows], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        states = [
            AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=attention)
            .eval()(**inputs, output_hidden_states=True)
            .hidden_states
            for folder, attention in ((teacher, "sdpa"), (student, "lln"))
        ]
    return layers_loss(states[1], states[0], inputs["attention_mask"].bool()).item()


def test_hidden_state_distillation_keeps_the_student_near_the_teachers_layers(teacher, tmp_path):
    """The same fine-tuning with and without --distill_hidden_weight: with it, every layer's output stays
    closer to the teacher's (the end-to-end transfer stage's loss, folded into the fine-tuning)."""
    same = (
        f"--teacher_model_name_or_path {teacher} --task_name mrpc --glue_dir {FIXTURES} --attn_implementation lln "
        "--max_train_steps 12 --learning_rate 1e-2 --transfer_steps 0 --transfer_end_to_end_steps 0"
    )
    run(tmp_path / "without", same, "--distill_hidden_weight 0")
    run(tmp_path / "with", same, "--distill_hidden_weight 10")
    error = {name: hidden_state_error(teacher, tmp_path / name) for name in ("without", "with")}
    assert error["with"] < 0.7 * error["without"], error
    cards = {name: (tmp_path / name / "README.md").read_text() for name in ("without", "with")}
    assert "temperature 2). No attention transfer." in cards["without"]
    assert (
        "temperature 2) and of every layer's hidden states (weight 10). No attention transfer."
        in cards["with"]
    )


def test_end_to_end_transfer_alone(teacher, tmp_path):
    run(
        tmp_path,
        f"--teacher_model_name_or_path {teacher} --task_name mrpc --glue_dir {FIXTURES}",
        "--attn_implementation lln --max_train_steps 2 --transfer_steps 0 --transfer_end_to_end_steps 3",
        "--transfer_end_to_end_loss final --transfer_end_to_end_train attention --transfer_end_to_end_learning_rate 2e-3",
    )
    card = (tmp_path / "README.md").read_text()
    assert "layer-by-layer" not in card
    assert "3 end-to-end steps on the final hidden states, training `qk` with learning rate 0.002" in card


def test_transfer_batches_and_query_share_are_the_flags(teacher, tmp_path, monkeypatch):
    """--transfer_batch_size sets the transfer's own batches (the fine-tuning keeps its own), and
    --transfer_query_fraction reaches TransferSettings and the model card."""
    sizes = []
    real = run_glue.transfer_on_task

    def spy(accelerator, teacher, student, train_batches, args, task):
        sizes.extend(len(batch["input_ids"]) for batch in train_batches)
        return real(accelerator, teacher, student, train_batches, args, task)

    monkeypatch.setattr(run_glue, "transfer_on_task", spy)
    results = run(
        tmp_path,
        f"--teacher_model_name_or_path {teacher} --task_name mrpc --glue_dir {FIXTURES}",
        "--attn_implementation lln --max_train_steps 2 --transfer_steps 3",
        "--transfer_batch_size 3 --transfer_query_fraction 0.5",
    )
    assert sizes == [3, 1] and results["mrpc"]["train_samples"] == 4
    card = (tmp_path / "README.md").read_text()
    assert "3 layer-by-layer steps (loss: weights, on a random 50% of the query rows each step)" in card


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ("--task_name mrpc --attn_implementation sdpa", "--attn_implementation must be one of .*got 'sdpa'"),
        ("--task_name mrpc", "--attn_implementation must be one of .*got None"),
        ("--task_name cola --attn_implementation lln", r"must predict cola's 2 label\(s\) \['unacceptable'"),
        ("--task_name mrpc,rte --attn_implementation lln", "one task"),
        (
            "--task_name mrpc --attn_implementation cheap_linear --transfer_loss weights",
            "'cheap_linear' has none",
        ),
        ("--task_name mrpc --attn_implementation lln --distill_alpha 1.5", "--distill_alpha must be in"),
        (
            "--task_name mrpc --attn_implementation lln --distill_hidden_weight -1",
            "--distill_hidden_weight must be >= 0, got -1",
        ),
        (
            "--task_name mrpc --attn_implementation lln --transfer_end_to_end_learning_rate 0",
            "--transfer_end_to_end_learning_rate must be > 0",
        ),
        (
            "--task_name mrpc --attn_implementation lln --transfer_batch_size 0",
            "--transfer_batch_size must be an integer >= 1, got 0",
        ),
        (
            "--task_name mrpc --attn_implementation lln --transfer_query_fraction 1.5",
            r"--transfer_query_fraction must be in \(0, 1\], got 1.5",
        ),
    ],
)
def test_bad_teacher_setups_fail_before_any_work(teacher, tmp_path, flags, match):
    with pytest.raises(ValueError, match=match):
        run(tmp_path / "out", f"--teacher_model_name_or_path {teacher} --glue_dir {FIXTURES}", flags)
    assert not (tmp_path / "out").exists()


def test_teacher_with_other_labels_or_model_type_is_refused(teacher, tiny_bert, tmp_path):
    relabelled = AutoModelForSequenceClassification.from_pretrained(teacher)
    relabelled.config.id2label = {0: "different", 1: "equivalent"}
    relabelled.config.label2id = {"different": 0, "equivalent": 1}
    relabelled.save_pretrained(tmp_path / "relabelled")
    AutoTokenizer.from_pretrained(teacher).save_pretrained(tmp_path / "relabelled")
    flags = f"--task_name mrpc --glue_dir {FIXTURES} --attn_implementation lln"
    with pytest.raises(
        ValueError, match=r"must predict mrpc's 2 label\(s\) \['not_equivalent', 'equivalent'\]"
    ):
        run(tmp_path / "out", f"--teacher_model_name_or_path {tmp_path / 'relabelled'}", flags)
    convert_checkpoint(teacher, tmp_path / "lln", variant="lln")
    with pytest.raises(
        ValueError, match="must be a softmax BERT or RoBERTa checkpoint .* got model_type 'lln_bert'"
    ):
        run(tmp_path / "out", f"--teacher_model_name_or_path {tmp_path / 'lln'}", flags)
    distilbert = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=141, dim=64, n_layers=1, n_heads=1, hidden_dim=64)
    )
    distilbert.save_pretrained(tmp_path / "distilbert")
    AutoTokenizer.from_pretrained(teacher).save_pretrained(tmp_path / "distilbert")
    with pytest.raises(
        ValueError, match="--model_name_or_path must be a BERT or RoBERTa checkpoint.*'distilbert'"
    ):
        run(
            tmp_path / "out",
            f"--teacher_model_name_or_path {teacher} --model_name_or_path {tmp_path / 'distilbert'}",
            flags,
        )
    with pytest.raises(ValueError, match="--distill_temperature need --teacher_model_name_or_path"):
        run(tmp_path / "out", f"--model_name_or_path {tiny_bert}", flags, "--distill_temperature 3")
    with pytest.raises(ValueError, match="--model_name_or_path is required"):
        run(tmp_path / "out", flags)
    missing = tmp_path / "missing" / "teacher"
    with pytest.raises(ValueError, match=f"--teacher_model_name_or_path {missing}: no such file or folder"):
        run(tmp_path / "out", f"--teacher_model_name_or_path {missing} --model_name_or_path {teacher}", flags)
    assert not (tmp_path / "out").exists()
