"""Block-diagonal softmax specifics: default block, partial blocks, empty rows, dropout, equality to SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_lln import ops
from tests.ops._variants import random_qkv


def test_default_block_is_head_size_and_one_block_equals_softmax():
    q, k, v = random_qkv(2, 2, 32, 32, seed=1)
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ops.block_diag_attention(q, k, v), expected, rtol=1e-12, atol=1e-12)
    split = ops.block_diag_attention(q, k, v, block_size=16)
    halves = torch.cat(
        [
            F.scaled_dot_product_attention(q[:, :, s], k[:, :, s], v[:, :, s])
            for s in (slice(0, 16), slice(16, 32))
        ],
        dim=2,
    )
    torch.testing.assert_close(split, halves, rtol=1e-12, atol=1e-12)


def test_last_partial_block_and_rows_without_keys():
    q, k, v = random_qkv(1, 1, 10, 8, seed=2)
    mask = torch.tensor([[True, True, True, True, False, False, False, False, True, False]])
    out = ops.block_diag_attention(q, k, v, mask, block_size=4)
    torch.testing.assert_close(out[:, :, 4:8], torch.zeros(1, 1, 4, 8, dtype=torch.float64))
    torch.testing.assert_close(out[:, :, 8:], v[:, :, 8:9].expand(1, 1, 2, 8))
    causal = ops.block_diag_attention(q, k, v, mask, block_size=4, causal=True)
    torch.testing.assert_close(causal[:, :, 0], v[:, :, 0])
    assert torch.isfinite(causal).all()


def test_dropout_acts_on_probabilities_only_when_asked():
    q, k, v = random_qkv(1, 2, 64, 16, seed=3)
    plain = ops.block_diag_attention(q, k, v)
    torch.manual_seed(0)
    dropped = ops.block_diag_attention(q, k, v, dropout_p=0.5)
    assert not torch.allclose(plain, dropped)
    torch.testing.assert_close(ops.block_diag_attention(q, k, v, dropout_p=0.0), plain)
