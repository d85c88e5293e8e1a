"""Presets, attention recorded in the config, position embeddings sized to the sequence length."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForMaskedLM, RobertaConfig, RobertaTokenizer, pipeline

from hf_lln.models.configuration_lln import config_for_attention, position_offset
from hf_lln.recipes.mlm import (
    PRESETS,
    build_model,
    check_mlm_arguments,
    preset_config,
    resolve_max_seq_length,
)
from hf_lln.recipes.mlm.model import PADDING_ROW_BIAS
from hf_lln.recipes.training import decay_parameter_groups
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
    # the 300 tokens padded to a multiple of 64
    assert model.config.vocab_size == 320 and model.config.pad_token_id == 0
    input_ids = torch.randint(4, 300, (1, 1024))
    logits = model(input_ids=input_ids).logits
    assert logits.shape == (1, 1024, 320) and torch.isfinite(logits).all()


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


def word_tokenizer(size: int) -> RobertaTokenizer:
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({f"w{i}": i for i in range(5, size)})
    return RobertaTokenizer(vocab=vocab, merges=[])


def test_new_model_vocabulary_is_padded_and_padding_rows_are_never_predicted(tmp_path):
    tokenizer = word_tokenizer(100)
    torch.manual_seed(0)
    args = mlm_args(max_seq_length=32)
    model = build_model(args, preset_config("lln-roberta-tiny"), tokenizer, 32)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == model.config.vocab_size == 128 and len(tokenizer) == 100
    assert model.get_output_embeddings().weight.shape[0] == 128

    # a training step (AdamW with weight decay, the scripts' groups) leaves the pinned bias where it is
    optimizer = torch.optim.AdamW(decay_parameter_groups(model, 0.1), lr=1e-2)
    input_ids = torch.randint(5, 100, (4, 32))
    labels = torch.where(torch.rand(4, 32) < 0.3, input_ids, -100)
    model.train()
    output = model(input_ids=input_ids, labels=labels)
    output.loss.backward()
    bias = model.get_output_embeddings().bias
    assert torch.equal(bias.grad[100:], torch.zeros(28))
    optimizer.step()
    assert torch.equal(bias[100:], torch.full((28,), PADDING_ROW_BIAS))
    # the loss over the padded vocabulary is the loss over the real one
    real = torch.nn.functional.cross_entropy(output.logits[..., :100].flatten(0, 1), labels.flatten())
    torch.testing.assert_close(output.loss, real, rtol=1e-6, atol=0)

    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    fill_mask = pipeline("fill-mask", model=str(tmp_path), device="cpu")
    assert fill_mask.model.config.vocab_size == 128 and len(fill_mask.tokenizer) == 100
    predictions = fill_mask("w5 w6 <mask> w8 w9", top_k=len(tokenizer))
    assert sorted(p["token"] for p in predictions) == list(range(100))
    assert sum(p["score"] for p in predictions) == pytest.approx(1, rel=1e-5)
    with torch.no_grad():
        logits = fill_mask.model(input_ids=input_ids).logits
    assert torch.isfinite(logits).all()
    assert (logits[..., 100:].amax() < logits[..., :100].amin() - 1000).item()


def test_pretrained_model_keeps_its_vocabulary_unless_the_tokenizer_is_larger(tmp_path):
    config = RobertaConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=32
    )
    AutoModelForMaskedLM.from_config(config).save_pretrained(tmp_path)
    args = mlm_args(model_name_or_path=str(tmp_path))
    assert build_model(args, config, word_tokenizer(100), 64).config.vocab_size == 100
    grown = build_model(args, config, word_tokenizer(130), 64)
    assert grown.config.vocab_size == 192 and grown.get_input_embeddings().weight.shape[0] == 192
    bias = grown.get_output_embeddings().bias
    assert (bias[:130] > -100).all() and torch.equal(bias[130:], torch.full((62,), PADDING_ROW_BIAS))
