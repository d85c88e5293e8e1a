"""Each materialised matrix times V equals the variant's fast op: ties the analysed matrices to the real ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_lln import ops
from hf_lln.experiments.analysis.matrices import attention_matrix, is_row_stochastic, variant_of

PROJECTION = ops.performer_projection(32, 64, seed=3)
FAST_OPS = {
    "softmax": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
    "lln": ops.lln_attention,
    "lln_diag": lambda q, k, v: ops.lln_diag_attention(q, k, v, block_size=5),
    "block_diag": lambda q, k, v: ops.block_diag_attention(q, k, v, block_size=5),
    "cheap_linear": ops.cheap_linear_attention,
    "linear_elu": ops.linear_elu_attention,
    "performer": lambda q, k, v: ops.performer_attention(q, k, v, projection=PROJECTION),
    "cosformer": ops.cosformer_attention,
}


def inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 13, 64, generator=generator, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("variant", list(FAST_OPS))
def test_matrix_times_v_equals_the_fast_op(variant):
    q, k, v = inputs()
    matrix = attention_matrix(variant, q, k, block_size=5, projection=PROJECTION)
    assert matrix.shape == (2, 3, 13, 13) and matrix.dtype == torch.float64
    torch.testing.assert_close(matrix @ v, FAST_OPS[variant](q, k, v), rtol=1e-9, atol=1e-9)
    if is_row_stochastic(variant):
        assert (matrix >= 0).all()
        torch.testing.assert_close(matrix.sum(-1), torch.ones(2, 3, 13, dtype=torch.float64))


def test_softmax_names_map_to_softmax_and_float32_inputs_are_promoted():
    q, k, _ = (t.float() for t in inputs(1))
    for name in ("eager", "sdpa"):
        assert variant_of(name) == "softmax"
        expected = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 8.0, dim=-1)
        torch.testing.assert_close(attention_matrix(name, q, k), expected)


def test_cheap_linear_is_signed_and_not_row_stochastic():
    q, k, _ = inputs(2)
    matrix = attention_matrix("cheap_linear", q, k)
    assert not is_row_stochastic("cheap_linear")
    assert (matrix < 0).any()


def test_unknown_implementation_and_bad_shapes_are_rejected():
    q, k, _ = inputs()
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        attention_matrix("nope", q, k)
    with pytest.raises(ValueError, match=r"\(batch, heads, seq, head_dim\)"):
        attention_matrix("lln", q[0], k[0])
