"""The PyTorch paths on CUDA (SDPA's fused kernels, cuBLAS) against the float64 CPU references."""

from __future__ import annotations

import pytest
import torch

from hf_lln.ops.dispatch import use_kernels
from tests.ops._variants import DENSE, FAST, NAMES, random_mask, random_qkv, relative_error, variant_kwargs

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"]
)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("seq", [1, 63, 500])
def test_cuda_matches_reference(name, dtype, causal, seq):
    q, k, v = (t.to(dtype).double() for t in random_qkv(2, 3, seq, 64, seed=seq))
    mask = random_mask(2, seq, seed=seq)
    kwargs = variant_kwargs(name, 3, 64, 64, torch.float64)
    kwargs = {
        key: (
            val.detach().to(dtype).double().requires_grad_()
            if isinstance(val, torch.Tensor) and val.requires_grad
            else val
        )
        for key, val in kwargs.items()
    }
    ref = DENSE[name](q, k, v, mask, causal=causal, **kwargs)
    cuda_kwargs = {
        key: (val.detach().to("cuda", dtype) if isinstance(val, torch.Tensor) and val.requires_grad else val)
        for key, val in kwargs.items()
    }
    leaves = [t.to("cuda", dtype).requires_grad_() for t in (q, k, v)]
    with use_kernels("torch"):
        out = FAST[name](*leaves, mask.cuda(), causal=causal, **cuda_kwargs)
    out.float().sum().backward()
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert all(torch.isfinite(leaf.grad).all() for leaf in leaves)
    rows = mask[:, None, :, None]
    # fp32 matrix products on CUDA may use TF32-free cuBLAS paths; allow fp32 rounding of long sums.
    tolerance = 1e-4 if dtype == torch.float32 else 4 * torch.finfo(dtype).eps
    assert relative_error(out.cpu() * rows, ref * rows) < tolerance
