"""torch.compile with the whole graph (no breaks), and what self-attention-only variants refuse."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import BertConfig, BertLMHeadModel, BertModel

import hf_lln
from hf_lln.models.configuration_lln import lln_config_from
from hf_lln.models.modeling_lln import LLNBertModel
from tests._tiny import TINY


def _model(variant: str, **overrides) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(**{**TINY, **overrides}, attn_implementation=variant)).eval()


def _batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, TINY["vocab_size"], (2, 11), generator=generator)
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 7:] = 0
    return ids, mask


@pytest.mark.parametrize("variant", hf_lln.ATTENTION_VARIANTS)
def test_fullgraph_compile_forward_and_backward_match_eager(variant):
    model = _model(variant, lln_performer_features=16)
    ids, mask = _batch()
    expected = model(ids, attention_mask=mask).last_hidden_state
    expected.sum().backward()
    eager_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    out = compiled(ids, attention_mask=mask).last_hidden_state
    out.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = _grads(model)
    for name, eager in eager_grads.items():
        torch.testing.assert_close(grads[name], eager, rtol=1e-4, atol=1e-5, msg=name)


def _grads(model) -> dict[str, torch.Tensor]:
    """Every parameter's gradient, zeros where none flowed (the compiled graph may write explicit zeros)."""
    return {
        name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for name, p in model.named_parameters()
    }


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lln", "lln_diag"])
def test_inductor_compiles_the_lln_classes_without_graph_breaks(variant):
    torch.manual_seed(0)
    model = LLNBertModel(
        lln_config_from(BertConfig(**TINY), lln_variant=variant, lln_mix_mode="average")
    ).eval()
    ids, mask = _batch()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(input_ids=ids, attention_mask=mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(ids, attention_mask=mask).last_hidden_state,
            model(ids, attention_mask=mask).last_hidden_state,
            rtol=1e-4,
            atol=1e-4,
        )


def _decoder(variant: str, mix_mode: str = "average"):
    torch.manual_seed(0)
    config = BertConfig(**TINY, is_decoder=True, add_cross_attention=True, attn_implementation=variant)
    if mix_mode != "average":
        return hf_lln.LLNBertModel(lln_config_from(config, lln_variant=variant, lln_mix_mode=mix_mode)).eval()
    return BertLMHeadModel(config).eval()


@pytest.mark.parametrize("mix_mode", ["average", "learnable_scale", "learnable_ratio"])
@pytest.mark.parametrize("encoder_length", [11, 6])
@pytest.mark.parametrize("variant", ["lln", "lln_diag"])
def test_cross_attention_is_refused_naming_it(variant, encoder_length, mix_mode):
    if variant == "lln" and mix_mode != "average":
        pytest.skip("the mix modes belong to lln_diag")
    model = _decoder(variant, mix_mode)
    ids, _ = _batch()
    encoder_states = torch.randn(2, encoder_length, TINY["hidden_size"])
    with pytest.raises(ValueError, match="self-attention only.*cross-attention"):
        model(ids, encoder_hidden_states=encoder_states, use_cache=False)


def test_a_decoder_without_cross_attention_is_causal():
    # cheap_linear has no per-sequence statistics, so a causal row sees exactly its prefix (LLN's alpha and beta
    # come from the whole sequence).
    torch.manual_seed(0)
    config = BertConfig(**TINY, is_decoder=True, attn_implementation="cheap_linear")
    model = BertModel(config).eval()
    ids, _ = _batch()
    with torch.no_grad():
        full = model(ids, use_cache=False).last_hidden_state
        prefix = model(ids[:, :6], use_cache=False).last_hidden_state
    # Causal: a prefix's outputs do not depend on the tokens after it (values, not only shapes).
    torch.testing.assert_close(full[:, :6], prefix, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full[:, 6:], full[:, 6:].flip(1))


def test_output_attentions_warns_that_no_weights_come_back():
    model = _model("lln")
    ids, mask = _batch()
    with pytest.warns(UserWarning, match="output_attentions=True returns no attention weights"):
        model(ids, attention_mask=mask, output_attentions=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(ids, attention_mask=mask)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["lln", "lln_diag", "cheap_linear"])
def test_the_fused_kernels_compile_in_one_graph_on_cuda(variant):
    from hf_lln.ops.dispatch import use_kernels

    torch.manual_seed(0)
    config = BertConfig(**{**TINY, "attention_probs_dropout_prob": 0.1}, attn_implementation=variant)
    model = BertModel(config).cuda().to(torch.bfloat16).train()
    ids, mask = (t.cuda() for t in _batch())
    with use_kernels("triton"):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(model)(input_ids=ids, attention_mask=mask)
        assert explanation.graph_break_count == 0, [reason.reason for reason in explanation.break_reasons]
        model.eval()
        compiled = torch.compile(model, fullgraph=True, dynamic=False)
        out = compiled(ids, attention_mask=mask).last_hidden_state
        out.float().sum().backward()
        expected = model(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)
