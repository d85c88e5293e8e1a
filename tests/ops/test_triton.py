"""Fused Triton kernels against the PyTorch paths (run in float64) and the dense references.

GPU tests poison the CUDA caching allocator with NaN first, so an output element the kernels never
write shows up as NaN; every comparison also checks finiteness.
"""

from __future__ import annotations

import pytest
import torch

from hf_lln.ops import lln_attention, lln_diag_attention, reference
from hf_lln.ops import triton as fused
from hf_lln.ops.dispatch import use_kernels
from tests.ops._fused import poison_allocator

# Relative Frobenius error allowed per input dtype: float32 runs exact float32 products; bf16/fp16
# round the output and gradients to the input dtype and run the float32 products as tf32.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def _inputs(batch, heads, seq, head_dim, dtype, *, padded=True, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device="cuda")

    q = (1.3 * randn(batch, heads, seq, head_dim) + 0.2).to(dtype)
    k = (0.8 * randn(batch, heads, seq, head_dim) - 0.1).to(dtype)
    v = randn(batch, heads, seq, head_dim).to(dtype)
    mask = None
    if padded:
        lengths = torch.randint(1, seq + 1, (batch,), generator=gen, device="cuda")
        lengths[0] = seq
        mask = torch.arange(seq, device="cuda")[None, :] < lengths[:, None]
    return q, k, v, mask


def _rel_error(got, want):
    """Relative Frobenius error; the reference norm is floored at an RMS of 0.1 (gradients here are of
    order one) so that gradients that are exactly zero (one key: the output is v whatever q and k)
    compare by their rounding noise, not by a ratio to zero."""
    assert torch.isfinite(got).all(), "non-finite (unwritten) elements"
    diff = (got.double() - want).norm()
    return (diff / want.norm().clamp_min(0.1 * want.numel() ** 0.5)).item()


def _run(fn, q, k, v, mask, weights, grad_out, **kwargs):
    """Output and gradients of ``fn`` w.r.t. q, k, v and the learnable ``weights``."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    weights = {name: w.detach().clone().requires_grad_() for name, w in weights.items()}
    out = fn(q, k, v, mask, **weights, **kwargs)
    out.backward(grad_out.to(out.dtype))
    return [out, q.grad, k.grad, v.grad, *(w.grad for w in weights.values())]


def _compare(variant, q, k, v, mask, *, weights=None, **kwargs):
    """Kernels on the inputs vs the PyTorch path on the same values in float64; returns the errors."""
    fn = lln_attention if variant == "lln" else lln_diag_attention
    weights = weights or {}
    gen = torch.Generator(device="cuda").manual_seed(1)
    grad_out = torch.randn(*q.shape[:3], v.shape[-1], generator=gen, device="cuda", dtype=torch.float64)
    with use_kernels("torch"):
        want = _run(fn, q.double(), k.double(), v.double(), mask, weights, grad_out, **kwargs)
    poison_allocator()
    with use_kernels("triton"):
        got = _run(fn, q, k, v, mask, weights, grad_out, **kwargs)
    assert got[0].dtype == q.dtype and got[0].shape == want[0].shape
    return [_rel_error(g, w) for g, w in zip(got, want, strict=True)]


LENGTHS = (1, 63, 65, 500, 4097)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Every dtype meets every head size it is fused for, and every length meets every dtype, without the
# full product (each dtype x head size x variant compiles its own kernels).
CASES = [
    (variant, dtype, head_dim, LENGTHS[(3 * i + j + 2 * offset) % len(LENGTHS)])
    for offset, variant in enumerate(("lln", "lln_diag"))
    for i, dtype in enumerate(DTYPES)
    for j, head_dim in enumerate(fused.SUPPORTED_DIMS)
    if dtype != torch.float32 or head_dim <= fused.MAX_FLOAT32_DIM
]


@pytest.mark.gpu
@pytest.mark.parametrize("variant, dtype, head_dim, seq", CASES, ids=str)
def test_matches_pytorch_path(variant, dtype, head_dim, seq):
    q, k, v, mask = _inputs(3, 2, seq, head_dim, dtype, seed=seq + head_dim)
    errors = _compare(variant, q, k, v, mask)
    assert max(errors) < TOLERANCE[dtype], errors


@pytest.mark.gpu
@pytest.mark.parametrize("mix", ["average", "learnable_scale", "learnable_ratio"])
def test_mix_modes_and_weight_gradients(mix):
    q, k, v, mask = _inputs(2, 3, 300, 64, torch.float32)
    gen = torch.Generator(device="cuda").manual_seed(2)
    weights = {}
    if mix != "average":
        weights["lln_weight"] = torch.rand(3, 64, generator=gen, device="cuda")
    if mix == "learnable_scale":
        weights["diag_weight"] = torch.rand(3, 64, generator=gen, device="cuda")
    errors = _compare("lln_diag", q, k, v, mask, mix=mix, weights=weights)
    assert len(errors) == 4 + len(weights)
    assert max(errors) < TOLERANCE[torch.float32], errors


@pytest.mark.gpu
@pytest.mark.parametrize("block_size", [16, 40, 128])
@pytest.mark.parametrize("stats", ["per_sequence", "global"])
def test_block_sizes_and_global_stats(block_size, stats):
    q, k, v, mask = _inputs(3, 2, 333, 64, torch.bfloat16, seed=block_size)
    errors = _compare("lln_diag", q, k, v, mask, block_size=block_size, stats=stats, scale=0.2)
    assert max(errors) < TOLERANCE[torch.bfloat16], errors


@pytest.mark.gpu
def test_transformers_layout_unpadded_and_empty_sequence():
    """(batch, seq, heads, dim) views go in without copies; a sequence with no real token gives zeros."""
    q, k, v, _ = _inputs(3, 4, 200, 64, torch.bfloat16, padded=False)
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    assert _compare("lln_diag", q, k, v, None)[0] < TOLERANCE[torch.bfloat16]
    mask = torch.ones(3, 200, dtype=torch.bool, device="cuda")
    mask[1] = False
    mask[2, 150:] = False
    errors = _compare("lln", q, k, v, mask)
    assert max(errors) < TOLERANCE[torch.bfloat16], errors
    out = fused.fused_lln_diag_attention(q, k, v, mask)
    assert out.stride() == q.stride()
    assert out[1].abs().max().item() == 0.0


@pytest.mark.gpu
def test_float32_head_dim_128_falls_back_to_pytorch():
    q, k, v, mask = _inputs(2, 2, 100, 128, torch.float32)
    assert not fused.supports(q, k, v, mask, causal=False, dropout_p=0.0)
    out = lln_diag_attention(q, k, v, mask)
    with use_kernels("torch"):
        want = lln_diag_attention(q, k, v, mask)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_head_dim_128_with_narrower_values_and_widest_block(dtype):
    q, k, v, mask = _inputs(2, 2, 300, 128, dtype, seed=3)
    errors = _compare("lln_diag", q, k, v[..., :64].contiguous(), mask, block_size=128)
    assert max(errors) < TOLERANCE[dtype], errors
    errors = _compare("lln", q[..., :32].contiguous(), k[..., :32].contiguous(), v, mask)
    assert max(errors) < TOLERANCE[dtype], errors
    # unpadded, seq a multiple of 16: Triton's most specialised compile, which pipelines the most loads
    # (three-stage block passes at 128 asked for 416 KiB of shared memory here)
    q, k, v, _ = _inputs(2, 2, 256, 128, dtype, padded=False, seed=4)
    errors = _compare("lln_diag", q, k, v, None)
    assert max(errors) < TOLERANCE[dtype], errors


@pytest.mark.gpu
def test_matches_dense_reference():
    q, k, v, mask = _inputs(2, 2, 130, 64, torch.float32)
    weight = torch.rand(2, 64, device="cuda", dtype=torch.float64)
    kwargs = dict(mix="learnable_ratio", lln_weight=weight, block_size=32)
    want = reference.dense_lln_diag(q.double(), k.double(), v.double(), mask, **kwargs)
    poison_allocator()
    got = fused.fused_lln_diag_attention(q, k, v, mask, **kwargs)
    assert _rel_error(got, want) < TOLERANCE[torch.float32]


def test_cpu_inputs_are_not_supported_and_rejected_by_name():
    q = torch.randn(1, 2, 8, 64)
    assert not fused.supports(q, q, q, None, causal=False, dropout_p=0.0)
    with pytest.raises(ValueError, match="q must be on a CUDA device"):
        fused.fused_lln_attention(q, q, q)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "change, expected",
    [
        (dict(causal=True), "causal"),
        (dict(dropout_p=1.0), "dropout_p"),
        (dict(head_dim=48), "head_dim"),
        (dict(head_dim=128), "float32"),
        (dict(dtype=torch.float64), "dtype"),
        (dict(block_size=129), "block_size"),
        (dict(block_size=65), "float32"),
    ],
)
def test_supports_rejects(change, expected):
    q, k, v, mask = _inputs(1, 2, 10, change.get("head_dim", 64), change.get("dtype", torch.float32))
    assert fused.supports(*_inputs(1, 2, 10, 64, torch.float32), causal=False, dropout_p=0.0)
    options = dict(
        causal=change.get("causal", False),
        dropout_p=change.get("dropout_p", 0.0),
        block_size=change.get("block_size"),
    )
    assert not fused.supports(q, k, v, mask, **options)
    assert expected in fused.unsupported_reason("lln_diag", q, k, v, mask, **options)


def test_key_mask_is_a_dense_int32_copy():
    """The kernels read a mask as dense int32 (``functions.key_mask``), whatever the bool mask's strides."""
    from hf_lln.ops.triton.functions import key_mask

    wide = torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) > 0.5
    mask = wide.t()  # (batch 5, seq 6) with a last stride of 5
    got = key_mask(mask)
    assert got.dtype == torch.int32 and got.is_contiguous() and got.shape == mask.shape
    assert torch.equal(got.bool(), mask)
    assert key_mask(None) is None


@pytest.mark.gpu
def test_dropout_is_lln_diag_only():
    q, k, v, mask = _inputs(1, 2, 10, 64, torch.float32)
    assert fused.supports(q, k, v, mask, causal=False, dropout_p=0.1)
    assert fused.unsupported_reason("lln_diag", q, k, v, mask, dropout_p=0.1) is None
    assert "dropout_p" in fused.unsupported_reason("lln", q, k, v, mask, dropout_p=0.1)
    assert "dropout_p" in fused.unsupported_reason("cheap_linear", q, k, v, mask, dropout_p=0.1)
