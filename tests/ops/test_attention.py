"""Every fast path against its dense reference, forward and backward, on awkward shapes."""

from __future__ import annotations

import pytest
import torch

from tests.ops._variants import DENSE, FAST, NAMES, random_mask, random_qkv, relative_error, variant_kwargs

LENGTHS = (1, 7, 63, 64, 65)
HEAD_DIMS = (32, 64, 100)


def _outputs_and_grads(fn, q, k, v, mask, kwargs, causal, probe):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    weights = {
        name: value
        for name, value in kwargs.items()
        if isinstance(value, torch.Tensor) and value.requires_grad
    }
    out = fn(*leaves, mask, causal=causal, **kwargs)
    inputs = leaves + list(weights.values())
    grads = torch.autograd.grad((out * probe).sum(), inputs, allow_unused=True)
    return out.detach(), [
        g if g is not None else torch.zeros_like(t) for g, t in zip(grads, inputs, strict=True)
    ]


def _compare(name, batch, heads, seq, head_dim, *, dtype, padded, causal, tolerance, seed=0):
    q, k, v = random_qkv(batch, heads, seq, head_dim, dtype=torch.float64, seed=seed)
    mask = random_mask(batch, seq, seed) if padded else None
    kwargs = variant_kwargs(name, heads, head_dim, head_dim, torch.float64)
    probe = torch.randn(
        batch, heads, seq, head_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(7)
    )
    if mask is not None:
        probe = probe * mask[:, None, :, None]
    ref_out, ref_grads = _outputs_and_grads(DENSE[name], q, k, v, mask, kwargs, causal, probe)
    fast_kwargs = {
        key: (
            val.detach().to(dtype).requires_grad_()
            if isinstance(val, torch.Tensor) and val.requires_grad
            else val
        )
        for key, val in kwargs.items()
    }
    fast_out, fast_grads = _outputs_and_grads(
        FAST[name], q.to(dtype), k.to(dtype), v.to(dtype), mask, fast_kwargs, causal, probe.to(dtype)
    )
    assert fast_out.dtype == dtype
    real = torch.ones(batch, seq, dtype=torch.bool) if mask is None else mask
    rows = real[:, None, :, None]
    assert relative_error(fast_out * rows, ref_out * rows) < tolerance, "forward"
    for index, (fast_grad, ref_grad) in enumerate(zip(fast_grads, ref_grads, strict=True)):
        assert torch.isfinite(fast_grad).all()
        if ref_grad.abs().max() > 0:
            assert relative_error(fast_grad, ref_grad) < tolerance, f"gradient {index}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq", LENGTHS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_float64_matches_reference(name, seq, head_dim, causal):
    for padded in (False, True):
        _compare(
            name, 3, 2, seq, head_dim, dtype=torch.float64, padded=padded, causal=causal, tolerance=1e-10
        )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_float32_matches_reference(name, causal):
    _compare(name, 2, 2, 65, 64, dtype=torch.float32, padded=True, causal=causal, tolerance=1e-5, seed=1)


@pytest.mark.parametrize(
    "name", ["lln", "lln_diag_learnable_scale", "cheap_linear", "performer", "cosformer", "linear_elu"]
)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_long_sequence_matches_reference(name, causal):
    _compare(name, 2, 1, 500, 64, dtype=torch.float64, padded=True, causal=causal, tolerance=1e-10, seed=2)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_padding_invariance(name, causal):
    """A sequence's outputs on its real tokens are the same alone and padded inside a batch of others."""
    seq, length = 40, 23
    q, k, v = random_qkv(3, 2, seq, 32, seed=4)
    mask = torch.ones(3, seq, dtype=torch.bool)
    mask[1, length:] = False
    kwargs = variant_kwargs(name, 2, 32, 32, torch.float64)
    batched = FAST[name](q, k, v, mask, causal=causal, **kwargs)[1, :, :length]
    alone = FAST[name](q[1:2, :, :length], k[1:2, :, :length], v[1:2, :, :length], causal=causal, **kwargs)[0]
    torch.testing.assert_close(batched, alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance(name):
    q, k, v = random_qkv(4, 2, 33, 32, seed=5)
    kwargs = variant_kwargs(name, 2, 32, 32, torch.float64)
    together = FAST[name](q, k, v, **kwargs)
    for index in range(4):
        alone = FAST[name](q[index : index + 1], k[index : index + 1], v[index : index + 1], **kwargs)
        torch.testing.assert_close(together[index : index + 1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("spread", [1.0, 10.0, 100.0])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_half_precision_is_finite_and_close(name, dtype, spread, causal, record_property):
    """q and k scaled up to 100x: no NaN/Inf forward or backward, error against float64 on the same
    (rounded) inputs bounded by a few units of the output dtype's rounding."""
    q, k, v = random_qkv(2, 2, 65, 64, seed=6, spread=spread)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    mask = random_mask(2, 65, seed=6)
    kwargs = variant_kwargs(name, 2, 64, 64, torch.float64)
    half_kwargs = {
        key: (
            val.detach().to(dtype).requires_grad_()
            if isinstance(val, torch.Tensor) and val.requires_grad
            else val
        )
        for key, val in kwargs.items()
    }
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = FAST[name](*leaves, mask, causal=causal, **half_kwargs)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(8))
    (out.float() * probe).sum().backward()
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    for leaf in leaves:
        assert torch.isfinite(leaf.grad).all()
    reference_kwargs = {
        key: (val.detach().double() if isinstance(val, torch.Tensor) and val.requires_grad else val)
        for key, val in half_kwargs.items()
    }
    ref = DENSE[name](q.double(), k.double(), v.double(), mask, causal=causal, **reference_kwargs)
    rows = mask[:, None, :, None]
    error = relative_error(out * rows, ref * rows)
    record_property("relative_error", error)
    unit = torch.finfo(dtype).eps
    assert error < 4 * unit, f"relative error {error:.2e} against float64"
