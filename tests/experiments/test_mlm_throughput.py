"""hf_lln.experiments.mlm_throughput: the zero-cost attention baseline, the table set against it, and the training
step it times being run_mlm.py's."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from transformers import AutoModelForMaskedLM

import hf_lln.recipes.training.loop
from hf_lln.models.configuration_lln import config_for_attention
from hf_lln.recipes import run_mlm
from hf_lln.recipes.mlm import MaskedLanguageModeling, load_default_corpus, preset_config

TINY_TABLE = [
    "mlm_throughput.py",
    "--config_name",
    "lln-roberta-tiny",
    "--seq_lengths",
    "32",
    "--steps",
    "1",
    "--warmup_steps",
    "1",
    "--mixed_precision",
    "no",
    "--tokens_per_batch",
    "64",
    "--attention_dropout",
    "0",
]


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("hf_lln.experiments.mlm_throughput")


def test_zero_cost_attention_ignores_queries_and_keys(script):
    config = config_for_attention(preset_config("lln-roberta-tiny"), script.ZERO_COST)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config, attn_implementation=script.ZERO_COST).eval()
    input_ids = torch.randint(5, config.vocab_size, (2, 16))
    with torch.no_grad():
        before = model(input_ids=input_ids).logits
        for layer in model.roberta.encoder.layer:
            layer.attention.self.query.weight.normal_()
            layer.attention.self.key.weight.normal_()
        after = model(input_ids=input_ids).logits
        layer.attention.self.value.weight.normal_()
        changed = model(input_ids=input_ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert not torch.allclose(changed, before)


def test_zero_cost_qk_attention_is_zero_cost_with_zero_query_and_key_gradients(script):
    """The same outputs as ``zero_cost``; the query and key projections get a gradient (of zeros), the values their
    real one."""
    outputs, grads = [], []
    for attention in (script.ZERO_COST, script.ZERO_COST_QK):
        config = config_for_attention(preset_config("lln-roberta-tiny"), attention)
        torch.manual_seed(0)
        model = AutoModelForMaskedLM.from_config(config, attn_implementation=attention).eval()
        logits = model(input_ids=torch.randint(5, config.vocab_size, (2, 16))).logits
        logits.square().mean().backward()
        self_attention = model.roberta.encoder.layer[0].attention.self
        outputs.append(logits.detach())
        grads.append([getattr(self_attention, name).weight.grad for name in ("query", "key", "value")])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    assert grads[0][0] is None and grads[0][1] is None  # zero_cost: the projections never reach the loss
    assert torch.count_nonzero(grads[1][0]) == 0 and torch.count_nonzero(grads[1][1]) == 0
    torch.testing.assert_close(grads[1][2], grads[0][2])


def test_table_sets_every_attention_against_the_zero_cost_steps(script, monkeypatch, capsys):
    argv = [*TINY_TABLE, "--attn_implementations", "lln", "sdpa", "zero_cost_qk", "zero_cost"]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = {cells[0].strip(): cells for cells in rows[1:]}
    assert list(rows) == [
        "zero_cost",
        "zero_cost_qk",
        "lln",
        "sdpa",
    ]  # the floors first, then in the order asked
    assert rows["zero_cost"][5].strip() == "1.00" and rows["zero_cost_qk"][6].strip() == "0.0"
    for attention in ("lln", "sdpa"):
        ms, floor, ratio = float(rows[attention][4]), float(rows["zero_cost"][4]), float(rows[attention][5])
        assert int(rows[attention][2]) == 2 and float(rows[attention][3].replace(",", "")) > 0
        # the ratio comes from the unrounded times, the check from times rounded to 0.05 ms: on these tiny CPU
        # steps (a millisecond or so) that rounding alone moves the ratio by several hundredths
        assert ratio == pytest.approx(ms / floor, abs=0.05 * (1 + ratio) / floor + 0.005)
        assert float(rows[attention][6]) == pytest.approx(
            ms - float(rows["zero_cost_qk"][4]), abs=0.15
        )  # rounding


def test_rounds_take_turns_and_the_table_gives_each_rows_median(script, monkeypatch, capsys):
    """With ``--rounds`` every row is measured that many times, one round of every row after another, and the
    table gives the median step of each row, every round's step and the floors' columns from the medians."""
    steps = {"zero_cost": [10.0, 30.0, 11.0], "lln": [20.0, 50.0, 22.0]}
    calls = []

    def fake_measure(accelerator, args, tokenizer, attention, seq, batch, profile=False):
        calls.append((attention, profile))
        ms = steps[attention][sum(1 for name, _ in calls if name == attention) - 1]
        return {"tokens_per_second": 0.0, "ms_per_step": ms, "peak_gib": float(ms), "profile": []}

    monkeypatch.setattr(script, "measure", fake_measure)
    argv = [*TINY_TABLE, "--attn_implementations", "lln", "zero_cost", "--rounds", "3", "--profile"]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    # the rows take turns, the floor first; only the first round is profiled
    assert calls == [("zero_cost", True), ("lln", True)] + [("zero_cost", False), ("lln", False)] * 2
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = {cells[0].strip(): [cell.strip() for cell in cells] for cells in rows[1:]}
    assert rows["zero_cost"][4] == "11.0" and rows["lln"][4] == "22.0"
    assert rows["lln"][5] == "2.00"
    assert rows["lln"][7] == "50.00"  # the largest peak of the rounds
    assert rows["lln"][8] == "20.0, 50.0, 22.0"


def test_the_timed_step_is_run_mlms_training_step(script, monkeypatch, capsys, tmp_path):
    """Both scripts reach ``hf_lln.recipes.training.loop.training_step`` with the MLM objective's loss and clipping."""
    assert script.training_step is hf_lln.recipes.training.loop.training_step
    calls = []
    real_step = hf_lln.recipes.training.loop.training_step

    def recording_step(accelerator, model, optimizer, scheduler, batch, compute_loss, max_grad_norm):
        calls.append((compute_loss, max_grad_norm, accelerator.unwrap_model(model).config.vocab_size))
        return real_step(accelerator, model, optimizer, scheduler, batch, compute_loss, max_grad_norm)

    monkeypatch.setattr(hf_lln.recipes.training.loop, "training_step", recording_step)
    monkeypatch.setattr(script, "training_step", recording_step)
    monkeypatch.setattr(sys, "argv", [*TINY_TABLE, "--attn_implementations", "lln_diag"])
    script.main()
    # the tiny preset's 4096 words (already a multiple of 64), one warm-up and one timed step
    assert [(loss.__func__, norm, vocab) for loss, norm, vocab in calls] == [
        (MaskedLanguageModeling.loss, 1.0, 4096)
    ] * 2

    calls.clear()
    corpus = tmp_path / "train.txt"
    corpus.write_text("\n".join(load_default_corpus()["text"][:200]) + "\n")
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    run_mlm.run(
        ["--output_dir", str(tmp_path / "run"), "--train_file", str(corpus), "--tokenizer_vocab_size", "300"]
        + ["--max_seq_length", "32", "--max_train_steps", "2", "--max_grad_norm", "0.5"]
    )
    # the trained 300-token vocabulary padded to 320
    assert [(loss.__func__, norm, vocab) for loss, norm, vocab in calls] == [
        (MaskedLanguageModeling.loss, 0.5, 320)
    ] * 2


@pytest.mark.gpu
def test_profile_counts_the_kernels_of_each_step(script):
    """Two 4096-wide matrix products a step, inside an annotated region as the optimizer step is: every profiled
    step's two launches are counted, not the region's span on the device timeline, the product kernel is listed,
    and the device time it reports is within the wall time."""
    a = torch.randn(4096, 4096, device="cuda")

    def step():
        with torch.profiler.record_function("annotated#step"):
            return (a @ a) @ a

    step()
    lines = script.profile_steps(step, a.device)
    head = lines[0].split()
    wall, kernels, launches = float(head[1]), float(head[6]), int(head[11])
    assert launches == 2 and 0 < kernels <= wall
    assert len(lines) >= 2 and float(lines[1].split()[0]) > 0
    assert not any("annotated" in line for line in lines)


def test_a_measured_model_is_freed_before_the_next_row(script, monkeypatch):
    """Nothing of a row's model outlives its measurement (else the next row's peak memory counts its weights),
    also under mixed precision, where accelerate's wrapped forward ties the model into a reference cycle."""
    import weakref

    built = []

    def recording_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built.append(weakref.ref(model))
        return model

    real_build = script.build_model
    monkeypatch.setattr(script, "build_model", recording_build)
    args = script.parse_args(TINY_TABLE[1:])
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    try:
        accelerator = script.Accelerator(mixed_precision="bf16", step_scheduler_with_optimizer=False)
        tokenizer = script.word_tokenizer(preset_config(args.config_name).vocab_size)
        assert script.measure(accelerator, args, tokenizer, "lln", 32, 2) is not None
    finally:  # the next test of this process builds its own accelerator, at its own precision
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert len(built) == 1 and built[0]() is None
