"""Fused cheap linear attention against the dense float64 reference (``reference.dense_cheap_linear``)
and the PyTorch path, forward and backward."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from hf_lln.ops import cheap_linear_attention, reference  # noqa: E402
from hf_lln.ops import triton as fused  # noqa: E402
from hf_lln.ops.triton.cheap_linear import fused_cheap_linear  # noqa: E402
from tests.ops._fused import TOLERANCE, inputs, needs_kernels, outputs_and_grads, rel_error  # noqa: E402


def _compare(q, k, v, mask, *, scale=None, fn=None):
    """Errors of out, dq, dk, dv against the dense reference in float64 on the same (rounded) values."""
    scale_value = q.shape[-1] ** -0.5 if scale is None else scale
    fn = fn or (lambda q, k, v: fused_cheap_linear(q, k, v, mask, scale=scale_value))
    gen = torch.Generator().manual_seed(1)
    grad_out = torch.randn(*q.shape[:3], v.shape[-1], generator=gen, dtype=torch.float64).to(q.device)
    got = outputs_and_grads(fn, [q, k, v], grad_out)
    want = outputs_and_grads(
        lambda q, k, v: reference.dense_cheap_linear(q, k, v, mask, scale=scale),
        [t.double() for t in (q, k, v)],
        grad_out,
    )
    assert got[0].dtype == q.dtype and got[0].shape == want[0].shape
    return [rel_error(g, w) for g, w in zip(got, want, strict=True)]


# (dtype, head_dim, v_dim, seq): every head size, awkward lengths, a v_dim other than head_dim; the
# interpreter's dot products on bf16 operands are wrong (Triton 3.8), so bf16 is left to the GPU tests.
CASES = [
    (torch.float32, 16, 16, 1),
    (torch.float32, 32, 32, 17),
    (torch.float32, 64, 32, 33),
    (torch.float16, 16, 16, 100),
    (torch.float16, 64, 64, 17),
    (torch.float16, 128, 128, 33),
]


@needs_kernels
@pytest.mark.parametrize("dtype, head_dim, v_dim, seq", CASES, ids=str)
def test_matches_dense_reference(dtype, head_dim, v_dim, seq):
    q, k, v, mask = inputs(3, 2, seq, head_dim, dtype, v_dim=v_dim, seed=seq + head_dim)
    errors = _compare(q, k, v, mask)
    assert max(errors) < TOLERANCE[dtype], errors


@needs_kernels
def test_unpadded_and_explicit_scale():
    q, k, v, _ = inputs(2, 2, 40, 32, torch.float32, padded=False, seed=3)
    errors = _compare(q, k, v, None, scale=0.7)
    assert max(errors) < TOLERANCE[torch.float32], errors


@needs_kernels
def test_sequence_without_real_keys_gives_zeros():
    q, k, v, _ = inputs(2, 2, 20, 16, torch.float32, seed=4)
    k[1, :, 5:] = float("nan")  # padding may hold anything: it must never reach the state
    v[1, :, 5:] = float("inf")
    mask = torch.ones(2, 20, dtype=torch.bool, device=q.device)
    mask[0] = False
    mask[1, 5:] = False
    out, dq, dk, dv = outputs_and_grads(
        lambda q, k, v: fused_cheap_linear(q, k, v, mask, scale=0.25),
        [q, k, v],
        torch.ones(2, 2, 20, 16, device=q.device),
    )
    assert torch.isfinite(out).all() and torch.isfinite(dq).all()
    assert out[0].abs().max() == 0 and dq[0].abs().max() == 0
    assert dk[0].abs().max() == 0 and dv[0].abs().max() == 0
    assert dk[1, :, 5:].abs().max() == 0 and dv[1, :, 5:].abs().max() == 0


DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LENGTHS = (1, 63, 65, 500, 4097)
GPU_CASES = [
    (dtype, head_dim, LENGTHS[(2 * i + j) % len(LENGTHS)])
    for i, dtype in enumerate(DTYPES)
    for j, head_dim in enumerate(fused.SUPPORTED_DIMS)
    if dtype != torch.float32 or head_dim <= fused.MAX_FLOAT32_DIM
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, head_dim, seq", GPU_CASES, ids=str)
def test_gpu_matches_pytorch_path(dtype, head_dim, seq):
    """The public function against the PyTorch path in float64 (O(seq), so long sequences fit)."""
    q, k, v, mask = inputs(3, 4, seq, head_dim, dtype, seed=seq, device="cuda")
    assert fused.unsupported_reason("cheap_linear", q, k, v, mask) is None
    gen = torch.Generator().manual_seed(1)
    grad_out = torch.randn(3, 4, seq, head_dim, generator=gen, dtype=torch.float64).cuda()
    torch.full((1 << 28,), float("nan"), device="cuda")  # poison: unwritten outputs show up as NaN
    got = outputs_and_grads(
        lambda q, k, v: fused.fused_cheap_linear_attention(q, k, v, mask), [q, k, v], grad_out
    )
    want = outputs_and_grads(
        lambda q, k, v: cheap_linear_attention(q, k, v, mask), [t.double() for t in (q, k, v)], grad_out
    )
    errors = [rel_error(g, w) for g, w in zip(got, want, strict=True)]
    assert max(errors) < TOLERANCE[dtype], errors


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_matches_dense_reference(dtype):
    q, k, v, mask = inputs(3, 4, 700, 64, dtype, seed=7, device="cuda")
    errors = _compare(q, k, v, mask, fn=lambda q, k, v: fused.fused_cheap_linear_attention(q, k, v, mask))
    assert max(errors) < TOLERANCE[dtype], errors


@pytest.mark.gpu
@pytest.mark.parametrize(
    "variant, change, expected",
    [
        ("cheap_linear", dict(causal=True), "causal"),
        ("cheap_linear", dict(dropout_p=0.1), "dropout_p"),
        ("cheap_linear", dict(block_size=16), "block_size"),
        ("cheap_linear", dict(head_dim=48), "head_dim"),
        ("cheap_linear", dict(head_dim=128), "float32"),
    ],
)
def test_gpu_unsupported_reason(variant, change, expected):
    q, k, v, mask = inputs(1, 2, 10, change.get("head_dim", 64), torch.float32, device="cuda")
    options = {name: change[name] for name in ("causal", "dropout_p", "block_size") if name in change}
    assert fused.unsupported_reason(variant, *inputs(1, 2, 10, 64, torch.float32, device="cuda")) is None
    assert expected in fused.unsupported_reason(variant, q, k, v, mask, **options)
