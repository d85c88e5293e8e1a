"""Bad input raises a clear error that names the argument, before any work."""

from __future__ import annotations

import pytest
import torch

from hf_lln import ops
from tests.ops._variants import FAST, NAMES, random_qkv, variant_kwargs


def _call(name, q, k, v, mask=None, **extra):
    kwargs = variant_kwargs(name, q.shape[1], q.shape[-1], v.shape[-1], torch.float64) if q.dim() == 4 else {}
    kwargs.update(extra)
    return FAST[name](q, k, v, mask, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_shape_rank_dtype_and_mask_errors(name):
    q, k, v = random_qkv(2, 2, 8, 32)
    with pytest.raises(ValueError, match=r"q must have shape \(batch, heads, seq, head_dim\)"):
        FAST[name](q[0], k, v, **variant_kwargs(name, 2, 32, 32, torch.float64))
    with pytest.raises(ValueError, match="k must have the shape of q"):
        _call(name, q, k[:, :, :5], v)
    with pytest.raises(ValueError, match="v must have shape"):
        _call(name, q, k, v[:, :1])
    with pytest.raises(TypeError, match="q must be a floating-point tensor"):
        _call(name, q.long(), k, v)
    with pytest.raises(TypeError, match="share one dtype"):
        _call(name, q, k.float(), v)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, seq\) = \(2, 8\)"):
        _call(name, q, k, v, torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        _call(name, q, k, v, torch.ones(2, 8))


def test_argument_value_errors():
    q, k, v = random_qkv(1, 2, 8, 32)
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        ops.block_diag_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        ops.lln_diag_attention(q, k, v, block_size=-3)
    with pytest.raises(
        ValueError, match="mix must be one of 'average', 'learnable_scale', 'learnable_ratio'"
    ):
        ops.lln_diag_attention(q, k, v, mix="sum")
    with pytest.raises(ValueError, match="needs lln_weight of shape"):
        ops.lln_diag_attention(q, k, v, mix="learnable_ratio")
    with pytest.raises(ValueError, match=r"lln_weight must have shape \(heads, v_dim\) = \(2, 32\)"):
        ops.lln_diag_attention(
            q, k, v, mix="learnable_ratio", lln_weight=torch.ones(3, 32, dtype=torch.float64)
        )
    with pytest.raises(ValueError, match="takes no diag_weight"):
        ops.lln_diag_attention(
            q, k, v, mix="learnable_ratio", lln_weight=torch.ones(2, 32), diag_weight=torch.ones(2, 32)
        )
    with pytest.raises(ValueError, match="stats must be one of"):
        ops.lln_attention(q, k, v, stats="batch")
    with pytest.raises(ValueError, match="eps must be a number > 0"):
        ops.lln_attention(q, k, v, eps=0)
    with pytest.raises(ValueError, match="scale must be a number > 0"):
        ops.cheap_linear_attention(q, k, v, scale=-1.0)
    with pytest.raises(ValueError, match="dropout_p must be a number in"):
        ops.block_diag_attention(q, k, v, dropout_p=1.5)
    with pytest.raises(ValueError, match=r"projection must have shape \(num_features, head_dim=32\)"):
        ops.performer_attention(q, k, v, projection=torch.randn(16, 8))


def test_errors_come_before_work(monkeypatch):
    """Validation runs before the moment statistics (the first real work) are computed."""
    import hf_lln.ops.lln as lln_module

    def fail(*args, **kwargs):
        raise AssertionError("work started before validation")

    monkeypatch.setattr(lln_module, "query_key_std", fail)
    q, k, v = random_qkv(1, 2, 8, 32)
    with pytest.raises(ValueError, match="chunk_size"):
        ops.lln_attention(q, k, v, chunk_size=0)
