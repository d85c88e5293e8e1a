"""hf_lln.recipes.run_mlm end to end on CPU: learning, exact resume, two processes, bad input, ``python -m``."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from hf_lln.recipes import run_mlm

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 320
# a fast run on the bundled corpus: 32-token blocks, a 320-token vocabulary, the tiny LLN+Diag preset
FAST = [
    "--max_seq_length",
    "32",
    "--tokenizer_vocab_size",
    str(VOCAB),
    "--learning_rate",
    "2e-3",
    "--logging_steps",
    "1",
]


def run(output_dir: Path, *flags: str) -> dict:
    """One in-process run, with accelerate's process-wide state reset as in a new process."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return run_mlm.run(["--output_dir", str(output_dir), *FAST, *flags])


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """The first 300 paragraphs of the bundled corpus as a local text file: quicker to tokenise."""
    from hf_lln.recipes.mlm import load_default_corpus

    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("\n".join(load_default_corpus()["text"][:300]) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("mlm") / "run"
    run(output_dir, "--max_train_steps", "40", "--eval_steps", "20", "--with_tracking")
    return output_dir


def test_tiny_run_learns_the_bundled_corpus_and_saves_everything(trained):
    results = json.loads((trained / "all_results.json").read_text())
    # a model that has learnt nothing predicts uniformly: loss ln(vocab)
    assert results["eval_loss"] < math.log(VOCAB) - 1.0
    assert results["eval_perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    assert results["tokens_per_second"] > 0 and results["train_steps"] == 40
    history = json.loads((trained / "log_history.json").read_text())
    losses = [entry["train_loss"] for entry in history if "train_loss" in entry]
    evals = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    assert sum(losses[:5]) / 5 > sum(losses[-5:]) / 5 + 0.5
    assert len(evals) == 2 and evals[1] < evals[0]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md"):
        assert (trained / name).is_file(), name
    assert list((trained / "mlm").glob("events.out.tfevents.*")), "no TensorBoard log"
    config = json.loads((trained / "config.json").read_text())
    assert config["model_type"] == "lln_roberta" and config["max_position_embeddings"] == 32 + 1
    assert config["vocab_size"] == VOCAB


def test_resume_equals_the_uninterrupted_run(tmp_path, small_corpus):
    flags = [
        "--train_file",
        str(small_corpus),
        "--max_train_steps",
        "6",
        "--checkpointing_steps",
        "3",
        "--eval_steps",
        "6",
    ]
    straight = run(tmp_path / "straight", *flags)
    interrupted = tmp_path / "interrupted"
    run(interrupted, *flags)
    # the stop: what the run wrote after step 3 is gone
    shutil.rmtree(interrupted / "step_6")
    for name in ("model.safetensors", "all_results.json"):
        (interrupted / name).unlink()
    resumed = run(interrupted, *flags, "--resume_from_checkpoint", "latest")
    assert resumed["eval_loss"] == straight["eval_loss"]
    assert resumed["train_steps"] == 6
    expected = load_file(tmp_path / "straight" / "model.safetensors")
    actual = load_file(interrupted / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert actual[name].equal(tensor), name


def test_two_processes_train_the_same_data_as_one(tmp_path, trained, small_corpus):
    # accelerate's multi-process launcher (torchrun) on CPU: ACCELERATE_USE_CPU=1 makes it gloo processes;
    # the recipe as a module ("-m"), from a folder without the checkout's scripts
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", run_mlm.__name__,
        "--output_dir", str(tmp_path / "ddp"), *FAST, "--max_train_steps", "8", "--per_device_train_batch_size", "4",
        "--checkpointing_steps", "4", "--tokenizer_name", str(trained), "--train_file", str(small_corpus),
    ]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "2 processes x 4 per device" in completed.stderr
    ddp = json.loads((tmp_path / "ddp" / "all_results.json").read_text())
    single = run(
        tmp_path / "single",
        "--max_train_steps",
        "8",
        "--per_device_train_batch_size",
        "8",
        "--tokenizer_name",
        str(trained),
    )
    # the same 8 batches of 8 blocks of 32 tokens (each process reads half of every batch); masks and
    # dropout are drawn per process, so the losses agree only approximately
    assert ddp["train_tokens"] == single["train_tokens"] == 8 * 8 * 32
    assert abs(ddp["eval_loss"] - single["eval_loss"]) < 0.3
    for step in (4, 8):
        assert (tmp_path / "ddp" / f"step_{step}" / "training_state.json").is_file()
        assert (tmp_path / "ddp" / f"step_{step}" / "random_states_1.pkl").is_file()
    assert not list((tmp_path / "ddp").glob(".step_*"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--train_file", "/nonexistent.txt"], "--train_file /nonexistent.txt: no such file"),
        (["--config_name", "lln-roberta-xl"], "unknown preset"),
        (["--resume_from_checkpoint", "latest"], "no complete checkpoint"),
        (["--checkpointing_steps", "sometimes"], "--checkpointing_steps"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run_mlm.parse_args(["--output_dir", str(tmp_path), *flags])


def test_sequences_beyond_a_pretrained_models_positions_fail(tmp_path, trained):
    with pytest.raises(ValueError, match="--max_seq_length 64 is larger than the 32 positions"):
        run(tmp_path, "--model_name_or_path", str(trained), "--max_seq_length", "64")


def test_resume_from_another_models_checkpoint_fails(tmp_path, trained):
    output_dir = tmp_path / "run"
    run(output_dir, "--max_train_steps", "2", "--checkpointing_steps", "2")
    with pytest.raises(
        ValueError, match="--config_name lln-roberta-tiny in the checkpoint, lln-roberta-small now"
    ):
        run(
            output_dir,
            "--max_train_steps",
            "2",
            "--resume_from_checkpoint",
            "latest",
            "--config_name",
            "lln-roberta-small",
        )


def test_a_run_into_another_runs_folder_neither_resumes_nor_overwrites_it(tmp_path, small_corpus):
    """Issue 14's case, scaled down: an older run's step_2/step_4 in the folder of a new 3-step run."""
    output_dir, corpus = tmp_path / "run", tmp_path / "train.txt"
    shutil.copy(small_corpus, corpus)
    data = ["--train_file", str(corpus), "--checkpointing_steps", "2"]
    older = run(output_dir, *data, "--max_train_steps", "4")
    weights = (output_dir / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="is not empty .*pass --overwrite_output_dir"):
        run(output_dir, *data, "--max_train_steps", "3")
    with pytest.raises(
        ValueError, match="no complete checkpoint of this run .*--max_train_steps 4 in the checkpoint, 3 now"
    ):
        run(output_dir, *data, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")
    with pytest.raises(ValueError, match="--learning_rate 0.002 in the checkpoint, 0.001 now"):
        run(
            output_dir,
            *data,
            "--max_train_steps",
            "4",
            "--learning_rate",
            "1e-3",
            "--resume_from_checkpoint",
            "latest",
        )
    assert (output_dir / "model.safetensors").read_bytes() == weights  # nothing was touched
    # the same run resumes (at its end: nothing more to train)
    resumed = run(output_dir, *data, "--max_train_steps", "4", "--resume_from_checkpoint", "latest")
    assert (resumed["train_steps"], resumed["eval_loss"]) == (older["train_steps"], older["eval_loss"])
    # other text in the same file under the same flags is another run
    corpus.write_text(corpus.read_text().replace(" the ", " a "))
    with pytest.raises(ValueError, match="another run, with the training data: fingerprint"):
        run(output_dir, *data, "--max_train_steps", "4", "--resume_from_checkpoint", "latest")


def test_a_run_failing_after_training_its_tokenizer_leaves_no_folder(tmp_path):
    corpus = tmp_path / "short.txt"
    corpus.write_text("a few words\nand a few more\n" * 20)
    with pytest.raises(ValueError, match="no sequence of --max_seq_length 512"):
        run(tmp_path / "run", "--train_file", str(corpus), "--max_seq_length", "512")
    assert not (tmp_path / "run").exists()  # the tokenizer it trained went with it: a rerun is not refused


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--model_name_or_path", "/nonexistent/model"],
            "--model_name_or_path /nonexistent/model: no such file or folder",
        ),
        (["--learning_rate", "nan"], "--learning_rate must be a finite number"),
        (["--attn_implementation", "lnn"], "'lnn' is not an attention implementation"),
    ],
)
def test_user_errors_are_named_before_any_folder_or_tokenizer(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run(tmp_path / "run", *flags)
    assert not (tmp_path / "run").exists()
