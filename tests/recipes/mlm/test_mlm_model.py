"""Presets, attention recorded in the config, position embeddings sized to the sequence length."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForMaskedLM, RobertaConfig

from hf_lln.models.configuration_lln import config_for_attention, position_offset
from hf_lln.recipes.mlm import (
    PRESETS,
    build_model,
    check_mlm_arguments,
    preset_config,
    resolve_max_seq_length,
)
from tests.recipes.mlm._mlm_args import mlm_args


def test_base_preset_has_roberta_base_sizes():
    config = preset_config("lln-roberta-base")
    # RoBERTa-base (Liu et al. 2019): 12 layers, hidden 768, 12 heads, FFN 3072, 50265 BPE tokens, 512 positions
    assert config.model_type == "lln_roberta"
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (12, 768, 12)
    assert (config.intermediate_size, config.vocab_size, config.max_position_embeddings) == (3072, 50265, 514)


def test_presets_grow_and_load_as_lln_roberta():
    sizes = [preset_config(name).hidden_size * preset_config(name).num_hidden_layers for name in PRESETS]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    for name in PRESETS:
        assert preset_config(name).lln_variant == "lln_diag"


def test_no_model_arguments_default_to_the_tiny_preset():
    args = mlm_args()
    check_mlm_arguments(args)
    assert args.config_name == "lln-roberta-tiny"
    assert resolve_max_seq_length(args, preset_config("lln-roberta-tiny")) == 128


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="--config_name lln-roberta-huge: unknown preset.*lln-roberta-tiny"):
        check_mlm_arguments(mlm_args(config_name="lln-roberta-huge"))


def test_attention_choice_is_recorded_in_the_config():
    tiny = preset_config("lln-roberta-tiny")
    assert config_for_attention(tiny, "lln").lln_variant == "lln"
    softmax = config_for_attention(tiny, "sdpa")
    assert type(softmax) is RobertaConfig and not hasattr(softmax, "lln_variant")
    assert softmax.hidden_size == tiny.hidden_size
    lifted = config_for_attention(RobertaConfig(hidden_size=64, num_attention_heads=1), "cheap_linear")
    assert lifted.model_type == "lln_roberta" and lifted.lln_variant == "cheap_linear"


class FakeTokenizer:
    pad_token_id, bos_token_id, eos_token_id = 0, 2, 3

    def __len__(self):
        return 300


def test_new_model_gets_positions_for_long_sequences():
    args = mlm_args(max_seq_length=1024, attn_implementation="lln")
    config = config_for_attention(preset_config("lln-roberta-tiny"), "lln")
    model = build_model(args, config, FakeTokenizer(), resolve_max_seq_length(args, config))
    # RoBERTa numbers positions from pad_token_id + 1, so 1024 tokens need 1024 + 1 + 0 rows here
    assert model.config.max_position_embeddings == 1024 + FakeTokenizer.pad_token_id + 1
    assert model.config.vocab_size == 300 and model.config.pad_token_id == 0
    input_ids = torch.randint(4, 300, (1, 1024))
    logits = model(input_ids=input_ids).logits
    assert logits.shape == (1, 1024, 300) and torch.isfinite(logits).all()


def test_pretrained_model_refuses_sequences_beyond_its_positions(tmp_path):
    config = RobertaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=32,
        max_position_embeddings=66,
    )
    AutoModelForMaskedLM.from_config(config).save_pretrained(tmp_path)
    assert position_offset(config) == 2
    args = mlm_args(model_name_or_path=str(tmp_path), max_seq_length=128)
    with pytest.raises(ValueError, match="--max_seq_length 128 is larger than the 64 positions"):
        resolve_max_seq_length(args, config)
    assert resolve_max_seq_length(mlm_args(model_name_or_path=str(tmp_path)), config) == 64
