"""scripts/mlm_throughput.py: the zero-cost attention baseline and the table set against it."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import AutoModelForMaskedLM

from hf_lln.models.configuration_lln import config_for_attention
from hf_lln.recipes.mlm import preset_config
from tests.scripts import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("mlm_throughput")


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


def test_table_sets_every_attention_against_the_zero_cost_step(script, monkeypatch, capsys):
    argv = ["mlm_throughput.py", "--config_name", "lln-roberta-tiny", "--seq_lengths", "32", "--steps", "1"]
    argv += [
        "--warmup_steps",
        "1",
        "--mixed_precision",
        "no",
        "--tokens_per_batch",
        "64",
        "--attention_dropout",
        "0",
    ]
    argv += ["--attn_implementations", "lln", "zero_cost"]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = {cells[0].strip(): cells for cells in rows[1:]}
    assert rows["zero_cost"][5].strip() == "1.00"
    assert float(rows["lln"][5]) > 0
