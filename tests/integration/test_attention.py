"""The registered attention implementations inside stock BERT/RoBERTa, against the dense references of
``hf_lln.ops.reference`` applied layer by layer outside Transformers' attention dispatch."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AttentionInterface,
    AttentionMaskInterface,
    BertConfig,
    BertModel,
    RobertaConfig,
    RobertaModel,
)

import hf_lln
from hf_lln.integration import ATTENTION_FUNCTIONS
from hf_lln.ops import reference
from hf_lln.ops.baselines import performer_projection
from tests._tiny import TINY

FAMILIES = {"bert": (BertConfig, BertModel), "roberta": (RobertaConfig, RobertaModel)}
SETTINGS = {"lln_block_size": 4, "lln_performer_features": 48, "lln_performer_seed": 3}


def tiny_model(family: str, variant: str, **overrides):
    config_class, model_class = FAMILIES[family]
    torch.manual_seed(0)
    config = config_class(**{**TINY, **overrides}, attn_implementation=variant)
    for name, value in SETTINGS.items():
        setattr(config, name, value)
    return model_class(config).double().eval()


def batch(seed: int = 1, seq: int = 11):
    """Token ids (2, seq) without the pad id and a mask whose second row has 4 padding positions at the end."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY["vocab_size"], (2, seq), generator=generator)
    mask = torch.ones(2, seq, dtype=torch.long)
    mask[1, -4:] = 0
    return ids, mask


def dense_attention(variant: str, q, k, v, mask, *, causal: bool, layer_idx: int):
    """The variant's dense reference with the settings the tiny models carry."""
    if variant == "lln_diag":
        return reference.dense_lln_diag(q, k, v, mask, block_size=SETTINGS["lln_block_size"], causal=causal)
    if variant == "performer":
        projection = performer_projection(
            SETTINGS["lln_performer_features"], q.shape[-1], seed=SETTINGS["lln_performer_seed"] + layer_idx
        )
        return reference.dense_performer(q, k, v, mask, projection=projection, causal=causal)
    return getattr(reference, f"dense_{variant}")(q, k, v, mask, causal=causal)


def layer_by_layer(model, variant: str, ids, mask, *, causal: bool = False) -> torch.Tensor:
    """The encoder run by hand from the model's own sub-modules, attention from the dense reference."""
    real = mask.bool()
    hidden = model.embeddings(input_ids=ids)
    for index, layer in enumerate(model.encoder.layer):
        attention = layer.attention.self
        batch_size, seq, _ = hidden.shape

        q, k, v = [
            projection(hidden).view(batch_size, seq, -1, attention.attention_head_size).transpose(1, 2)
            for projection in (attention.query, attention.key, attention.value)
        ]
        context = dense_attention(variant, q, k, v, real, causal=causal, layer_idx=index)
        context = context.transpose(1, 2).reshape(batch_size, seq, -1)
        attended = layer.attention.output(context, hidden)
        hidden = layer.output(layer.intermediate(attended), attended)
    return hidden


def test_import_registers_every_variant_with_both_interfaces():
    assert hf_lln.ATTENTION_VARIANTS == (
        "lln",
        "lln_diag",
        "cheap_linear",
        "linear_elu",
        "performer",
        "cosformer",
    )
    for name in hf_lln.ATTENTION_VARIANTS:
        assert name in AttentionInterface._global_mapping
        assert name in AttentionMaskInterface._global_mapping


@pytest.mark.parametrize("variant", hf_lln.ATTENTION_VARIANTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_stock_model_equals_reference_layer_by_layer(family, variant):
    model = tiny_model(family, variant)
    ids, mask = batch()
    with torch.no_grad():
        out = model(ids, attention_mask=mask).last_hidden_state
        expected = layer_by_layer(model, variant, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(out[real], expected[real], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("variant", hf_lln.ATTENTION_VARIANTS)
def test_decoder_runs_the_causal_path(variant):
    model = tiny_model("bert", variant, is_decoder=True)
    ids, mask = batch()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=False).last_hidden_state
        expected = layer_by_layer(model, variant, ids, mask, causal=True)
        bidirectional = layer_by_layer(model, variant, ids, mask, causal=False)
    real = mask.bool()
    torch.testing.assert_close(out[real], expected[real], rtol=1e-7, atol=1e-9)
    assert not torch.allclose(out[real], bidirectional[real])


@pytest.mark.parametrize("variant", hf_lln.ATTENTION_VARIANTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_padded_and_unpadded_batches_agree_on_real_tokens(family, variant):
    model = tiny_model(family, variant)
    ids, mask = batch()
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).last_hidden_state
        for row in range(2):
            length = int(mask[row].sum())
            alone = model(ids[row : row + 1, :length]).last_hidden_state[0]
            torch.testing.assert_close(padded[row, :length], alone, rtol=1e-7, atol=1e-9)


def test_interface_contract_shape_scaling_and_weights():
    """Called as Transformers calls it: (batch, seq, heads, head_dim) out, ``scaling`` used, weights None."""
    module = torch.nn.Module()
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    for scaling in (0.2, 0.9):
        out, weights = ATTENTION_FUNCTIONS["cheap_linear"](
            module, q, k, v, mask, scaling=scaling, dropout=0.0
        )
        expected = reference.dense_cheap_linear(q, k, v, mask, scale=scaling).transpose(1, 2)
        assert weights is None
        assert out.shape == (2, 9, 3, 8)
        torch.testing.assert_close(out[mask], expected[mask])


def test_dropout_only_in_training():
    model = tiny_model("bert", "lln_diag", attention_probs_dropout_prob=0.5)
    ids, mask = batch()
    with torch.no_grad():
        first, second = (model(ids, attention_mask=mask).last_hidden_state for _ in range(2))
        assert torch.equal(first, second)
        model.train()
        torch.manual_seed(1)
        dropped = model(ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(first, dropped)


@pytest.mark.parametrize("variant", hf_lln.ATTENTION_VARIANTS)
def test_torch_compile_runs_and_matches_eager(variant):
    model = tiny_model("bert", variant).float()
    ids, mask = batch()
    compiled = torch.compile(model, backend="eager", dynamic=False)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).last_hidden_state
        out = compiled(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_unknown_variant_name_is_rejected():
    with pytest.raises(ValueError, match="lln_dag"):
        BertModel(BertConfig(**TINY, attn_implementation="lln_dag"))


def test_four_dimensional_mask_is_rejected_with_its_shape():
    model = tiny_model("bert", "lln")
    ids, _ = batch()
    mask_4d = torch.zeros(2, 1, 11, 11, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"attention_mask .* \(batch, seq\) = \(2, 11\).*\(2, 1, 11, 11\)"):
        model(ids, attention_mask=mask_4d)


def test_learnable_mix_needs_the_lln_classes():
    model = tiny_model("bert", "lln_diag")
    model.config.lln_mix_mode = "learnable_ratio"
    ids, mask = batch()
    with pytest.raises(ValueError, match="lln_mix_mode='learnable_ratio'.*LLNBert"):
        model(ids, attention_mask=mask)


def test_queries_and_keys_of_different_lengths_are_rejected():
    module = torch.nn.Module()
    q, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="3 queries and 5 keys"):
        ATTENTION_FUNCTIONS["lln"](module, q, v, v, None)
