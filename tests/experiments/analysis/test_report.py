"""Model-level analysis: captured matrices reproduce each implementation's output inside a real model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertModel

from hf_lln.cli import build_parser
from hf_lln.experiments.analysis.report import analyze_model, markdown_table, write_report

IMPLEMENTATIONS = ["eager", "sdpa", "lln", "lln_diag", "cheap_linear", "linear_elu", "performer", "cosformer"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT with head_dim 64 and a non-default block size, saved to a folder."""
    config = BertConfig(
        vocab_size=64,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=64,
    )
    config.lln_block_size = 8
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(path)
    return path


def test_every_implementation_is_reconstructed_and_reported(tiny_bert, tmp_path):
    input_ids = torch.randint(5, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    result = analyze_model(tiny_bert, input_ids, IMPLEMENTATIONS)
    implementations = result.summary["implementations"]
    assert list(implementations) == IMPLEMENTATIONS
    for name, report in implementations.items():
        # Block size 8 (from the config), the per-layer performer projection, LLN's statistics: all honoured.
        assert report["reconstruction_error"] < 1e-4, name
        assert [layer["layer"] for layer in report["layers"]] == [0, 1]
        assert len(report["layers"][0]["heads"]) == 2
    softmax = implementations["eager"]["mean"]
    assert softmax == pytest.approx(implementations["sdpa"]["mean"], rel=1e-5)
    assert 0 < softmax["row_entropy_normalised"] <= 1 and 0 <= softmax["spectral_gap"] <= 1
    assert implementations["cheap_linear"]["row_stochastic"] is False
    assert set(implementations["cheap_linear"]["mean"]) == {
        "negative_fraction",
        "row_sum_mean",
        "row_sum_std",
    }
    assert "cheap_linear" not in result.log_samples and set(result.example_matrices) == set(IMPLEMENTATIONS)

    paths = write_report(result, tmp_path)
    assert json.loads((tmp_path / "analysis.json").read_text())["windows"] == 2
    assert {p.name for p in paths} >= {
        "analysis_layers.png",
        "analysis_lognormal.png",
        "analysis_matrices.png",
    }
    assert markdown_table(result.summary).count("\n") == len(IMPLEMENTATIONS) + 1


def test_analyze_command_on_the_real_minilm_and_text(minilm_path, data_dir, tmp_path, capsys):
    text = data_dir / "gutenberg" / "carroll-alice.txt"
    args = build_parser().parse_args(
        [
            "analyze",
            "--model_name_or_path",
            str(minilm_path),
            "--text",
            str(text),
            "--variants",
            "sdpa",
            "linear_elu",
            "--max_seq_length",
            "32",
            "--windows",
            "1",
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert args.func(args) == 0
    # minutes per implementation on a CPU: it says what it does and where it stands (6 layers x 2)
    captured = capsys.readouterr()
    assert captured.out.startswith("analyzing 2 attention implementations of ")
    assert "analyze: 100%" in captured.err and "12/12" in captured.err
    summary = json.loads((tmp_path / "analysis.json").read_text())
    assert summary["text"] == "carroll-alice.txt" and summary["seq_len"] == 32
    assert len(summary["implementations"]["sdpa"]["layers"]) == 6
    # Pretrained softmax attention is far sharper than elu+1 features on the same weights.
    sdpa, elu = (summary["implementations"][n]["mean"] for n in ("sdpa", "linear_elu"))
    assert sdpa["row_entropy_normalised"] < elu["row_entropy_normalised"]


def test_unknown_implementation_is_rejected_before_loading(tiny_bert):
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        analyze_model(tiny_bert, torch.zeros(1, 8, dtype=torch.long), ["sdpa", "flashy"])
