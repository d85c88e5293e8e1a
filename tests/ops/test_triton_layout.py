"""The fused kernels read q, k, v and gradients through their strides and write out, dq, dk, dv in their
inputs' memory order: strided inputs give the contiguous results, and Transformers' (batch, seq, heads,
dim) views cost no copy in the forward or the backward."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from tests.ops._fused import DEVICE, CopyRecorder, fused_call, inputs, needs_kernels, outputs_and_grads  # noqa: E402
from tests.ops._variants import relative_error  # noqa: E402

VARIANTS = ("lln", "lln_diag", "lln_diag_dropout", "cheap_linear")


def _strided(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of ``x: (batch, heads, seq, dim)`` held in another layout."""
    batch, heads, seq, dim = x.shape
    if layout == "transformers":  # (batch, seq, heads, dim) memory, as after a linear projection
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "fused_qkv":  # one slice of the last dim of a (batch, seq, heads, 3 * dim) tensor
        base = torch.randn(batch, seq, heads, 3 * dim, device=x.device).to(x.dtype)
        base[..., dim : 2 * dim] = x.transpose(1, 2)
        return base[..., dim : 2 * dim].transpose(1, 2)
    if layout == "seq_slice":  # a window of a longer sequence
        base = torch.randn(batch, heads, seq + 7, dim, device=x.device).to(x.dtype)
        base[:, :, 3 : 3 + seq] = x
        return base[:, :, 3 : 3 + seq]
    assert layout == "last_stride", layout  # not unit last stride: the one case the kernels copy
    return x.transpose(2, 3).contiguous().transpose(2, 3)


LAYOUTS = ("transformers", "fused_qkv", "seq_slice", "last_stride")
LENGTHS = (1, 17, 33, 100)
CASES = [
    (variant, layout, LENGTHS[(i + j) % len(LENGTHS)])
    for i, variant in enumerate(VARIANTS)
    for j, layout in enumerate(LAYOUTS)
]


@needs_kernels
@pytest.mark.parametrize("variant, layout, seq", CASES, ids=str)
def test_strided_inputs_match_contiguous(variant, layout, seq):
    q, k, v, mask = inputs(2, 2, seq, 16, torch.float32, seed=seq)
    if layout == "seq_slice":  # the mask a window of: last stride 1, row stride seq + 3
        mask = torch.cat([torch.ones(2, 3, dtype=torch.bool, device=DEVICE), mask], dim=1)[:, 3:]
    grad_out = torch.randn(2, 2, seq, 16).to(DEVICE)
    weights = [torch.rand(2, 16).to(DEVICE) for _ in range(2)] if variant.startswith("lln_diag") else []
    want = outputs_and_grads(fused_call(variant, mask), [q, k, v, *weights], grad_out)
    strided = [_strided(t, layout) for t in (q, k, v)]
    leaves = [t.detach().requires_grad_() for t in strided]
    weight_leaves = [w.clone().requires_grad_() for w in weights]
    out = fused_call(variant, mask)(*leaves, *weight_leaves)
    # autograd.grad hands back the Function's own gradients (.grad of a non-dense leaf would be a copy)
    grads = torch.autograd.grad(out, leaves + weight_leaves, _strided(grad_out, layout))
    # Not bit for bit: at these sizes the programs add the state and the mix weights' gradients atomically, in an
    # order that varies from call to call (on an H200 a weight gradient of 0.027 moved by 1.8e-6 between two
    # calls); a wrong stride moves values by their own size.
    for a, b in zip([out, *grads], want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if layout != "last_stride":
        assert _memory_order(out) == _memory_order(leaves[0])
        assert all(_memory_order(g) == _memory_order(leaf) for g, leaf in zip(grads[:3], leaves, strict=True))


def _memory_order(x: torch.Tensor) -> list[int]:
    """The leading dims of more than one element, outermost in memory first."""
    return sorted((d for d in range(3) if x.shape[d] > 1), key=lambda d: -x.stride(d))


def _copies_in_transformers_step(variant, batch, heads, seq, head_dim, dtype, mask, device):
    """The copies made around and inside the attention function of a Transformers layer's forward and
    backward: (batch, seq, heads * dim) projections viewed as (batch, heads, seq, dim), the output
    transposed back and flattened for the output projection. Checks every gradient arrives. The copies expected
    are the mask's, into the kernels' int32 form once per call (``functions.key_mask``) and from it into the bytes
    the unsplit backward reads (``functions._byte_mask``): they are left out."""
    gen = torch.Generator().manual_seed(0)
    projections = [
        torch.randn(batch, seq, heads * head_dim, generator=gen).to(device, dtype).requires_grad_()
        for _ in range(3)
    ]
    probe = torch.randn(batch, seq, heads * head_dim, generator=gen).to(device, dtype)
    weights = []
    if "diag" in variant:
        weights = [torch.rand(heads, head_dim, generator=gen).to(device).requires_grad_() for _ in range(2)]
    with CopyRecorder() as recorder:
        q, k, v = (p.view(batch, seq, heads, head_dim).transpose(1, 2) for p in projections)
        out = fused_call(variant, mask)(q, k, v, *weights)
        hidden = out.transpose(1, 2).reshape(batch, seq, heads * head_dim)
        (hidden * probe).sum().backward()
    assert all(p.grad is not None and p.grad.is_contiguous() for p in projections)
    assert all(w.grad is not None for w in weights)
    mask_copies = {("aten._to_copy.default", (batch, seq), dtype) for dtype in (torch.bool, torch.int32)}
    assert recorder.copies.count(("aten._to_copy.default", (batch, seq), torch.bool)) == (mask is not None)
    return [copy for copy in recorder.copies if copy not in mask_copies]


@needs_kernels
@pytest.mark.parametrize("variant", VARIANTS)
def test_no_copies_for_transformers_views(variant):
    mask = inputs(2, 2, 20, 16, torch.float32, seed=1)[3]
    assert _copies_in_transformers_step(variant, 2, 2, 20, 16, torch.float32, mask, DEVICE) == []


@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gpu_no_copies_and_strided_results(variant, dtype):
    """At a realistic size on the GPU: no copies for Transformers' views, and the same results as
    contiguous inputs (dropout draws the same mask: ``fused_call`` reseeds)."""
    mask = inputs(4, 12, 512, 64, dtype, seed=1, device="cuda")[3]
    assert _copies_in_transformers_step(variant, 4, 12, 512, 64, dtype, mask, "cuda") == []
    weights = [torch.rand(12, 64, device="cuda") for _ in range(2)] if "diag" in variant else []
    q, k, v, _ = inputs(4, 12, 512, 64, dtype, seed=2, device="cuda")
    grad_out = torch.randn(4, 12, 512, 64, device="cuda")
    call = fused_call(variant, mask)
    want = outputs_and_grads(call, [q, k, v, *weights], grad_out)
    got = outputs_and_grads(call, [_strided(t, "transformers") for t in (q, k, v)] + weights, grad_out)
    # The passes that reduce over the sequence finish with atomic adds, whose order varies from run to run: a
    # few half-precision elements round the other way, so compare in norm, far below the dtype's own error.
    for a, b in zip(got, want, strict=True):
        assert relative_error(a, b) < 1e-3
