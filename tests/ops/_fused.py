"""Shared pieces of the fused-kernel tests that run on small shapes under the Triton interpreter
(``TRITON_INTERPRET=1``, CPU tensors) or, without it, on a CUDA device.

The public functions of ``hf_lln.ops.triton`` accept CUDA tensors only, so these tests call the
autograd wrappers behind them (``functions.fused_lln``, ``cheap_linear.fused_cheap_linear``) directly;
``@pytest.mark.gpu`` tests go through the public functions at realistic sizes.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hf_lln.ops import reference
from hf_lln.ops.lln_diag import mix_outputs

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"
needs_kernels = pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(), reason="needs TRITON_INTERPRET=1 or a CUDA device"
)

# Relative Frobenius error allowed per input dtype (as tests/ops/test_triton.py): float32 runs float32
# products; bf16/fp16 round inputs, outputs and gradients to the input dtype.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


# the scale and diagonal block size of ``fused_call``
FUSED_SCALE = 0.3
FUSED_BLOCK_SIZE = 16


def fused_call(variant: str, mask, *, stats: str = "per_sequence"):
    """``fn(q, k, v, *weights)`` running one fused variant through its autograd wrapper (imports triton): "lln",
    "lln_diag" (mixed by ``learnable_scale`` when given the two weights, else ``average``), "lln_diag_dropout"
    (p = 0.2; torch reseeded so that every call draws the same mask) or "cheap_linear"; scale ``FUSED_SCALE``,
    diagonal blocks of ``FUSED_BLOCK_SIZE``, LLN statistics ``stats``."""
    from hf_lln.ops import triton as fused
    from hf_lln.ops.triton.cheap_linear import fused_cheap_linear
    from hf_lln.ops.triton.functions import fused_lln

    def call(q, k, v, *weights):
        if variant == "cheap_linear":
            return fused_cheap_linear(q, k, v, mask, scale=FUSED_SCALE)
        if variant == "lln":
            return fused_lln(
                q, k, v, mask, None, None, block_size=None, scale=FUSED_SCALE, eps=1e-6, stats=stats
            )
        mix = "learnable_scale" if weights else "average"
        w_lln, w_diag = fused._mix_weights(mix, *(weights or (None, None)))
        dropout_p = 0.2 if variant == "lln_diag_dropout" else 0.0
        torch.manual_seed(0)
        return fused_lln(
            q, k, v, mask, w_lln, w_diag, block_size=FUSED_BLOCK_SIZE, scale=FUSED_SCALE, eps=1e-6,
            stats=stats, dropout_p=dropout_p,
        )  # fmt: skip

    return call


def poison_allocator() -> None:
    """On a GPU, fill the blocks the next allocations will reuse with NaN, so that an output element the kernels
    never write, or a buffer they add into without a zero fill, shows up as NaN (the interpreter's CPU memory
    cannot be poisoned this way)."""
    if DEVICE != "cuda":
        return
    torch.cuda.synchronize()
    free, _ = torch.cuda.mem_get_info()
    blob = torch.full((min(free // 4, 1 << 28),), float("nan"), device="cuda")
    del blob


def inputs(batch, heads, seq, head_dim, dtype, *, v_dim=None, padded=True, seed=0, device=DEVICE):
    """q, k, v: (batch, heads, seq, dim) in ``dtype`` and a right-padding mask: (batch, seq) or None,
    whose first sequence is full and last has no real token when ``padded`` and batch > 2."""
    gen = torch.Generator().manual_seed(seed)
    q = 1.3 * torch.randn(batch, heads, seq, head_dim, generator=gen) + 0.2
    k = 0.8 * torch.randn(batch, heads, seq, head_dim, generator=gen) - 0.1
    v = torch.randn(batch, heads, seq, v_dim or head_dim, generator=gen)
    mask = None
    if padded:
        lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
        lengths[0] = seq
        if batch > 2:
            lengths[-1] = 0
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).to(device)
    return *(t.to(device, dtype) for t in (q, k, v)), mask


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Relative Frobenius error, the reference norm floored at an RMS of 0.1 (gradients here are of
    order one) so that exactly-zero references compare by rounding noise; non-finite fails."""
    assert torch.isfinite(got).all(), "non-finite elements"
    diff = (got.double() - want.double()).norm()
    return (diff / want.double().norm().clamp_min(0.1 * want.numel() ** 0.5)).item()


def outputs_and_grads(fn, tensors, grad_out):
    """``fn(*leaves)`` and the gradients of ``<out, grad_out>`` w.r.t. fresh leaves copied from ``tensors``."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    out.backward(grad_out.to(out.dtype))
    return [out.detach(), *(leaf.grad for leaf in leaves)]


def dense_lln_diag_dropout(q, k, v, mask, keep, dropout_p, *, mix, weights, block_size, scale):
    """LLN + Diag with the block softmax's probabilities dropped by ``keep: (batch, heads, seq, seq)``
    and the kept ones scaled by 1 / (1 - dropout_p): the dense form of the fused kernels' dropout."""
    lln_out = reference.dense_lln(q, k, v, mask, scale=scale)
    probs = reference.block_diag_matrix(q, k, mask, block_size=block_size, scale=scale)
    diag_out = (probs * keep / (1.0 - dropout_p)) @ v
    return mix_outputs(lln_out, diag_out, mix, weights.get("lln_weight"), weights.get("diag_weight"))


def _from_interpreter() -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_filename.endswith(os.path.join("triton", "runtime", "interpreter.py")):
            return True
        frame = frame.f_back
    return False


class CopyRecorder(TorchDispatchMode):
    """Records every copying aten op (``copy_``, ``clone`` (what ``.contiguous()`` runs), ``_to_copy``,
    ...) inside the block, with the shape and dtype of what it copies, except the Triton interpreter's staging of
    kernel arguments, which stands in for a GPU's memory and is no part of the code under test."""

    def __init__(self):
        super().__init__()
        # (op, shape, dtype of the tensor it copies)
        self.copies: list[tuple[str, tuple[int, ...], torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if ("copy" in name or "clone" in name) and not _from_interpreter():
            source = args[1] if name.startswith("aten.copy_") else args[0]
            self.copies.append((name, tuple(source.shape), source.dtype))
        return func(*args, **(kwargs or {}))
