"""The fixed-size encode/lookup API reproduces full attention, and its state does not grow with length."""

from __future__ import annotations

import pytest
import torch

from hf_lln import ops
from hf_lln.ops import reference
from hf_lln.ops.moments import token_std
from tests.ops._variants import random_mask, random_qkv


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seq", [1, 63, 500])
def test_cheap_linear_lookup_equals_full_attention(seq, padded):
    q, k, v = random_qkv(2, 3, seq, 32, seed=seq)
    mask = random_mask(2, seq, seed=seq) if padded else None
    state = ops.cheap_linear_encode(k, v, mask)
    assert state.kv.shape == (2, 3, 32, 32)
    expected = reference.dense_cheap_linear(q, k, v, mask)
    torch.testing.assert_close(ops.cheap_linear_lookup(q, state), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stats", ["per_sequence", "global"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seq", [1, 63, 500])
def test_lln_lookup_equals_full_attention(seq, padded, stats):
    q, k, v = random_qkv(2, 3, seq, 64, seed=seq, spread=1.5)
    mask = random_mask(2, seq, seed=seq) if padded else None
    state = ops.lln_encode(k, v, mask, q_std=token_std(q, mask, stats), stats=stats)
    assert state.kv.shape == (2, 3, 64, 64) and state.key_sum.shape == (2, 3, 64)
    expected = reference.dense_lln(q, k, v, mask, stats=stats)
    torch.testing.assert_close(ops.lln_lookup(q, state), expected, rtol=1e-10, atol=1e-12)


def test_lookup_answers_any_number_of_queries():
    """Queries need not be the encoded sequence's own: each answer equals full attention with that query
    appended to the document as an extra row (checked through the dense cheap-linear matrix)."""
    _, k, v = random_qkv(1, 2, 300, 32, seed=1)
    queries = torch.randn(1, 2, 17, 32, dtype=torch.float64)
    state = ops.cheap_linear_encode(k, v)
    expected = (0.5**2.5 * queries @ k.transpose(-1, -2) / 300) @ v
    torch.testing.assert_close(ops.cheap_linear_lookup(queries, state), expected, rtol=1e-10, atol=1e-12)


def test_lookup_rejects_mismatched_queries():
    _, k, v = random_qkv(1, 2, 10, 32)
    state = ops.cheap_linear_encode(k, v)
    with pytest.raises(ValueError, match="q must have shape"):
        ops.cheap_linear_lookup(torch.randn(1, 3, 4, 32, dtype=torch.float64), state)
    lln_state = ops.lln_encode(k, v, q_std=1.0)
    with pytest.raises(ValueError, match="q must have shape"):
        ops.lln_lookup(torch.randn(1, 2, 4, 16, dtype=torch.float64), lln_state)


def test_lookup_of_a_bare_tensor_is_a_clear_type_error():
    """The README once said encode returns a (batch, heads, d, d) tensor: passing one must say what to pass."""
    q, k, v = random_qkv(1, 2, 10, 32)
    with pytest.raises(TypeError, match="CheapLinearState that cheap_linear_encode returns, got Tensor"):
        ops.cheap_linear_lookup(q, ops.cheap_linear_encode(k, v).kv)
    with pytest.raises(TypeError, match="LLNState that lln_encode returns, got Tensor"):
        ops.lln_lookup(q, ops.lln_encode(k, v, q_std=1.0).kv)
