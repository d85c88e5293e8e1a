"""The shared training loop: exact resume, checkpoints, the plan, evaluation and the summary."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from torch.utils.data import DataLoader

from hf_lln.recipes.training import (
    add_training_arguments,
    check_training_arguments,
    make_accelerator,
    make_optimizer,
    make_scheduler,
    plan_training,
    train,
)
from hf_lln.recipes.training.checkpoint import STATE_FILE, data_fingerprint, model_fingerprint
from hf_lln.recipes.training.setup import removed_on_failure


class NoisyRegressor(torch.nn.Module):
    """Dropout and a random target perturbation: both must replay exactly after a resume."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 1)
        self.dropout = torch.nn.Dropout(0.3)

    def forward(self, x, y):
        prediction = self.head(self.dropout(self.norm(self.layer(x)))).squeeze(-1)
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(prediction, y))


def noisy_loss(model, batch):
    noise = 0.1 * torch.randn_like(batch["y"])
    return model(batch["x"], batch["y"] + noise).loss


def dataset(n=22):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    y = x.sum(-1)
    return [{"x": x[i], "y": y[i], "attention_mask": torch.ones(3, dtype=torch.long)} for i in range(n)]


def parse(output_dir: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    args = parser.parse_args(
        [
            "--output_dir",
            str(output_dir),
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "0.05",
            "--weight_decay",
            "0.01",
            "--num_warmup_steps",
            "2",
            "--gradient_accumulation_steps",
            "2",
            "--logging_steps",
            "1",
            *extra,
        ]
    )
    check_training_arguments(args)
    return args


def run(args: argparse.Namespace, evaluate=None, on_model=None, data_fingerprint=None):
    """One script run in this process: fresh accelerate state, model, data and loop."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = make_accelerator(args, "test")
    model = NoisyRegressor()
    if on_model is not None:
        on_model(model)
    optimizer = make_optimizer(model, args)
    loader = DataLoader(dataset(), batch_size=args.per_device_train_batch_size, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    plan = plan_training(args, len(loader))
    scheduler = accelerator.prepare(make_scheduler(optimizer, args, plan.max_train_steps))
    summary = train(
        accelerator,
        args,
        model,
        optimizer,
        scheduler,
        loader,
        plan,
        compute_loss=noisy_loss,
        evaluate=evaluate,
        data_fingerprint=data_fingerprint,
    )
    return summary, accelerator.unwrap_model(model).state_dict()


def test_resume_replays_the_uninterrupted_run_exactly(tmp_path):
    # 6 batches per epoch, 3 steps per epoch with accumulation 2: step 4 stops inside epoch 2.
    def evaluate():
        """A metric of the current weights, so that history entries differ from step to step."""
        return {"loss": float(sum(p.detach().double().sum() for p in model_params[-1]))}

    model_params = []

    def run_evaluated(args):
        return run(
            args, evaluate=evaluate, on_model=lambda model: model_params.append(list(model.parameters()))
        )

    every_2 = ("--max_train_steps", "8", "--eval_steps", "2")
    straight, straight_weights = run_evaluated(parse(tmp_path / "straight", *every_2))
    first, _ = run_evaluated(parse(tmp_path / "split", *every_2, "--checkpointing_steps", "4"))
    assert first.completed_steps == 8
    stopped, _ = run_evaluated(
        parse(tmp_path / "split", *every_2, "--resume_from_checkpoint", str(tmp_path / "split/step_4"))
    )
    resumed, resumed_weights = stopped, _
    assert resumed.completed_steps == 8
    for name, value in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=0, atol=0, msg=name)
    # the summary covers the whole run, not only the part after the resume
    assert resumed.log_history == straight.log_history
    assert [entry["step"] for entry in straight.log_history if "eval_loss" in entry] == [2, 4, 6, 8]
    assert resumed.train_loss == straight.train_loss
    assert resumed.train_tokens == straight.train_tokens
    # the straight run's final weights differ from a different seed's: the check above is not vacuous
    _, other_weights = run(parse(tmp_path / "other", "--max_train_steps", "8", "--seed", "7"))
    assert not torch.equal(other_weights["head.weight"], straight_weights["head.weight"])


def test_checkpoints_are_complete_folders_and_latest_is_the_newest(tmp_path):
    summary, _ = run(parse(tmp_path, "--max_train_steps", "6", "--checkpointing_steps", "2"))
    assert summary.completed_steps == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".step", "step"))) == [
        "step_2",
        "step_4",
        "step_6",
    ]
    state = json.loads((tmp_path / "step_4" / STATE_FILE).read_text())
    assert state["progress"]["completed_steps"] == 4
    assert state["progress"]["micro_batches"] == 8
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "step_4").iterdir())
    args = parse(tmp_path, "--max_train_steps", "6", "--resume_from_checkpoint", "latest")
    assert Path(args.resume_from_checkpoint) == tmp_path / "step_6"


def test_epoch_checkpoints_and_per_epoch_evaluation(tmp_path):
    calls = []

    def evaluate():
        calls.append(1)
        return {"loss": float(len(calls))}

    summary, _ = run(parse(tmp_path, "--num_train_epochs", "2", "--checkpointing_steps", "epoch"), evaluate)
    assert summary.completed_steps == 6
    assert summary.epochs == 2
    assert len(calls) == 2
    assert summary.results()["eval_loss"] == 2.0
    assert summary.train_tokens == 2 * 22 * 3
    assert summary.tokens_per_second > 0
    assert (tmp_path / "step_3").is_dir() and (tmp_path / "step_6").is_dir()


def test_resume_from_another_model_fails_clearly(tmp_path):
    run(parse(tmp_path, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    state_file = tmp_path / "step_2" / STATE_FILE
    state = json.loads(state_file.read_text())
    state["model_fingerprint"] = "0" * 16
    state_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="another model"):
        run(parse(tmp_path, "--max_train_steps", "2", "--resume_from_checkpoint", "latest"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--checkpointing_steps", "often"], "--checkpointing_steps"),
        (["--checkpointing_steps", "0"], "--checkpointing_steps"),
        (["--resume_from_checkpoint", "latest"], "no complete checkpoint"),
        (["--resume_from_checkpoint", "/nonexistent/step_3"], "not a checkpoint folder"),
        (["--max_train_steps", "0"], "--max_train_steps"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size"),
        (["--learning_rate", "-1"], "--learning_rate"),
    ],
)
def test_bad_arguments_name_the_flag(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        parse(tmp_path, *flags)


def test_plan_counts_optimizer_steps():
    args = argparse.Namespace(gradient_accumulation_steps=4, num_train_epochs=3, max_train_steps=None)
    plan = plan_training(args, 10)
    assert (plan.steps_per_epoch, plan.max_train_steps, plan.num_epochs) == (3, 9, 3)
    args.max_train_steps = 7
    assert plan_training(args, 10).num_epochs == 3
    with pytest.raises(ValueError, match="no batch"):
        plan_training(args, 0)


def test_fingerprint_ignores_wrappers_and_sees_shapes():
    model = NoisyRegressor()
    wrapped = torch.nn.Module()
    wrapped.module = model
    assert model_fingerprint(wrapped) == model_fingerprint(model)
    other = NoisyRegressor()
    other.head = torch.nn.Linear(8, 2)
    assert model_fingerprint(other) != model_fingerprint(model)


# Lost or corrupted work (issue 14): a run never resumes, overwrites or mixes with another run's work.


def test_a_new_run_into_a_used_folder_is_refused_unless_it_overwrites(tmp_path):
    run(parse(tmp_path, "--max_train_steps", "6", "--checkpointing_steps", "2"))
    with pytest.raises(
        ValueError, match=r"is not empty \(it holds .*step_2.*\): pass --overwrite_output_dir"
    ):
        parse(tmp_path, "--max_train_steps", "3")
    with pytest.raises(ValueError, match="give only one"):
        parse(tmp_path, "--overwrite_output_dir", "--resume_from_checkpoint", "latest")
    # overwriting deletes the earlier run's checkpoints: its step_4 and step_6 cannot be taken for this run's
    run(parse(tmp_path, "--max_train_steps", "3", "--checkpointing_steps", "2", "--overwrite_output_dir"))
    assert sorted(p.name for p in tmp_path.iterdir() if "step" in p.name) == ["step_2"]
    args = parse(tmp_path, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")
    assert Path(args.resume_from_checkpoint) == tmp_path / "step_2"


def test_latest_takes_only_this_runs_checkpoints_and_names_what_differs(tmp_path, caplog):
    """The reported case: a folder holding another run's later checkpoints next to this run's."""
    older, newer = tmp_path / "older", tmp_path / "newer"
    run(parse(older, "--max_train_steps", "6", "--checkpointing_steps", "2"))
    run(parse(newer, "--max_train_steps", "3", "--checkpointing_steps", "2", "--learning_rate", "0.01"))
    for step in (4, 6):
        shutil.copytree(older / f"step_{step}", newer / f"step_{step}")
    with caplog.at_level(logging.WARNING):
        args = parse(
            newer, "--max_train_steps", "3", "--learning_rate", "0.01", "--resume_from_checkpoint", "latest"
        )
    assert Path(args.resume_from_checkpoint) == newer / "step_2"
    assert (
        "skipped step_6, step_4 (another run's, with --learning_rate 0.05 in the checkpoint, 0.01 now; "
        in caplog.text
    )
    assert "--max_train_steps 6 in the checkpoint, 3 now" in caplog.text
    # another learning rate, step budget or seed is another run, also when the checkpoint is named
    for flags, difference in [
        (("--learning_rate", "0.02"), "--learning_rate 0.05 in the checkpoint, 0.02 now"),
        (("--seed", "7"), "--seed 42 in the checkpoint, 7 now"),
    ]:
        with pytest.raises(ValueError, match=f"belongs to another run, with {difference}"):
            parse(older, "--max_train_steps", "6", *flags, "--resume_from_checkpoint", str(older / "step_4"))
    with pytest.raises(
        ValueError, match="no complete checkpoint of this run .*--max_train_steps 6 in the checkpoint, 9 now"
    ):
        parse(older, "--max_train_steps", "9", "--resume_from_checkpoint", "latest")
    # what may change on resume: logging and evaluation cadence, checkpointing, tracking
    parse(
        older,
        "--max_train_steps",
        "6",
        "--logging_steps",
        "5",
        "--eval_steps",
        "3",
        "--resume_from_checkpoint",
        "latest",
    )


def test_resume_with_other_training_data_is_refused(tmp_path):
    args = parse(tmp_path, "--max_train_steps", "4", "--checkpointing_steps", "2")
    run(args, data_fingerprint="a" * 32)
    resumed = parse(tmp_path, "--max_train_steps", "4", "--resume_from_checkpoint", str(tmp_path / "step_2"))
    with pytest.raises(
        ValueError, match="another run, with the training data: fingerprint a+ in the checkpoint, b+ now"
    ):
        run(resumed, data_fingerprint="b" * 32)
    summary, _ = run(resumed, data_fingerprint="a" * 32)
    assert summary.completed_steps == 4


def test_data_fingerprint_follows_the_content_and_order():
    rows = {"text": ["one", "two", "three", "four"], "label": [0, 1, 0, 1]}
    base = data_fingerprint({"train": datasets.Dataset.from_dict(rows)})
    assert data_fingerprint({"train": datasets.Dataset.from_dict(dict(rows))}) == base
    edited = {**rows, "text": ["one", "two", "three", "fours"]}
    assert data_fingerprint({"train": datasets.Dataset.from_dict(edited)}) != base
    dataset = datasets.Dataset.from_dict(rows)
    shuffled = dataset.shuffle(seed=0).select(range(3))
    assert data_fingerprint({"train": shuffled}) == data_fingerprint(
        {"train": dataset.shuffle(seed=0).select(range(3))}
    )
    assert data_fingerprint({"train": shuffled}) != data_fingerprint(
        {"train": dataset.shuffle(seed=1).select(range(3))}
    )
    assert data_fingerprint({"train": dataset.select(range(3))}) != base


def test_an_incomplete_or_corrupt_checkpoint_is_skipped_by_latest_and_named_when_chosen(tmp_path, caplog):
    run(parse(tmp_path, "--max_train_steps", "6", "--checkpointing_steps", "2"))
    flags = ("--max_train_steps", "6", "--resume_from_checkpoint")
    weights = tmp_path / "step_6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    (tmp_path / "step_4" / STATE_FILE).write_text('{"progress": {"completed_st')  # a state cut short
    with caplog.at_level(logging.WARNING):
        args = parse(tmp_path, *flags, "latest")
    assert Path(args.resume_from_checkpoint) == tmp_path / "step_2"
    assert "skipped step_6 (incomplete or corrupt: " in caplog.text and "has 100 bytes where" in caplog.text
    assert f"step_4 (incomplete or corrupt: {tmp_path / 'step_4' / STATE_FILE} is unreadable" in caplog.text
    with pytest.raises(ValueError, match=f"{tmp_path / 'step_6' / 'model.safetensors'} has 100 bytes where"):
        parse(tmp_path, *flags, str(tmp_path / "step_6"))
    with pytest.raises(ValueError, match=f"{tmp_path / 'step_4' / STATE_FILE} is unreadable"):
        parse(tmp_path, *flags, str(tmp_path / "step_4"))
    (tmp_path / "step_2" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="model.safetensors is missing: the checkpoint is incomplete"):
        parse(tmp_path, *flags, str(tmp_path / "step_2"))
    with pytest.raises(ValueError, match="no complete checkpoint of this run"):
        parse(tmp_path, *flags, "latest")


def test_a_damaged_checkpoint_of_the_right_size_fails_to_load_with_its_path(tmp_path):
    run(parse(tmp_path, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    weights = tmp_path / "step_2" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:8] = b"\xff" * 8  # the header length: garbage
    weights.write_bytes(bytes(data))
    args = parse(tmp_path, "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
    with pytest.raises(
        ValueError, match=f"--resume_from_checkpoint {tmp_path / 'step_2'}: the checkpoint cannot be loaded"
    ):
        run(args)


def test_checkpoints_are_readable_by_others_under_the_usual_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        run(parse(tmp_path, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    finally:
        os.umask(previous)
    checkpoint = tmp_path / "step_2"
    assert checkpoint.stat().st_mode & 0o777 == 0o755
    modes = {path.name: path.stat().st_mode & 0o777 for path in checkpoint.iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes


def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(tmp_path):
    output_dir = tmp_path / "run"
    with pytest.raises(RuntimeError), removed_on_failure(output_dir):
        output_dir.mkdir()
        (output_dir / "tokenizer.json").write_text("{}")
        raise RuntimeError("the first step failed")
    assert not output_dir.exists()
    output_dir.mkdir()  # an empty folder the user made stays, emptied
    with pytest.raises(KeyboardInterrupt), removed_on_failure(output_dir):
        (output_dir / "mlm").mkdir()
        raise KeyboardInterrupt
    assert output_dir.is_dir() and not list(output_dir.iterdir())
    with pytest.raises(RuntimeError), removed_on_failure(output_dir):  # a checkpoint is kept for a resume
        (output_dir / "step_2").mkdir()
        raise RuntimeError("later")
    assert (output_dir / "step_2").is_dir()
