"""Fused Triton kernels for non-causal LLN and LLN + Diag (optional; triton is imported lazily).

``fused_lln_attention`` / ``fused_lln_diag_attention`` compute ``hf_lln.ops.lln_attention`` /
``hf_lln.ops.lln_diag_attention`` restricted to
what the kernels handle (``fused_unsupported_reason``): CUDA tensors of one dtype (float32, bfloat16, float16),
``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)`` with head_dim and v_dim
in {16, 32, 64, 128} (128 for bf16/fp16 only: 128-wide float32 tiles overflow shared memory), key
padding ``mask: (batch, seq)`` bool or None, non-causal, no dropout, diagonal blocks of at most 128
tokens (64 for float32). Differentiable w.r.t. q, k, v and the mix weights; alpha and beta carry no
gradient, as in the PyTorch path. Design and measurements: docs/kernels.md.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SUPPORTED_DIMS = (16, 32, 64, 128)
MAX_BLOCK_SIZE = 128
# float32 tiles of wider blocks or heads need more shared memory than an H100 has (compiler's report).
MAX_FLOAT32_BLOCK_SIZE = 64
MAX_FLOAT32_DIM = 64


@functools.cache
def is_available() -> bool:
    """True when triton is importable and a CUDA device is present (checked once per process)."""
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


def _unsupported(q, k, v, mask, causal, dropout_p, block_size) -> str | None:
    """Why the kernels cannot take these inputs, or None when they can."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return f"{name} must be a 4-d tensor (batch, heads, seq, dim)"
        if x.device.type != "cuda":
            return f"{name} must be on a CUDA device, got {x.device}"
        if x.dtype not in SUPPORTED_DTYPES:
            return f"{name} must have dtype float32, bfloat16 or float16, got {x.dtype}"
    if k.dtype != q.dtype or v.dtype != q.dtype:
        return f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
    if k.device != q.device or v.device != q.device:
        return "q, k, v must be on one device"
    if k.shape != q.shape:
        return f"k must have q's shape {tuple(q.shape)}, got {tuple(k.shape)}"
    if v.shape[:3] != q.shape[:3]:
        return f"v must have shape {tuple(q.shape[:3])} + (v_dim,), got {tuple(v.shape)}"
    if q.shape[2] < 1:
        return "seq must be at least 1"
    if q.shape[3] not in SUPPORTED_DIMS or v.shape[3] not in SUPPORTED_DIMS:
        return f"head_dim and v_dim must be in {SUPPORTED_DIMS}, got {q.shape[3]} and {v.shape[3]}"
    if q.dtype == torch.float32 and max(q.shape[3], v.shape[3]) > MAX_FLOAT32_DIM:
        return (
            f"head_dim and v_dim must be at most {MAX_FLOAT32_DIM} for float32 inputs, "
            f"got {q.shape[3]} and {v.shape[3]} (bfloat16 and float16 take 128)"
        )
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            return "mask must be a bool tensor (batch, seq) or None"
        if mask.shape != q.shape[:1] + q.shape[2:3] or mask.device != q.device:
            return f"mask must have shape {(q.shape[0], q.shape[2])} on q's device, got {tuple(mask.shape)}"
    if causal:
        return "causal attention is not fused (the chunked PyTorch path handles it)"
    if dropout_p != 0.0:
        return f"dropout_p must be 0.0, got {dropout_p}"
    if block_size is not None and not 1 <= block_size <= MAX_BLOCK_SIZE:
        return f"block_size must be in [1, {MAX_BLOCK_SIZE}], got {block_size}"
    if block_size is not None and q.dtype == torch.float32 and block_size > MAX_FLOAT32_BLOCK_SIZE:
        return f"block_size must be at most {MAX_FLOAT32_BLOCK_SIZE} for float32 inputs, got {block_size}"
    return None


FUSED_VARIANTS = ("lln", "lln_diag")


def fused_unsupported_reason(
    variant: str, q, k, v, mask, *, causal: bool, dropout_p: float, block_size: int | None = None
) -> str | None:
    """Why the fused kernels cannot run ``variant`` on these inputs, or None when they can (the dispatcher's
    one test; it does not check that triton and a GPU are present, ``is_available`` does)."""
    if variant not in FUSED_VARIANTS:
        return f"{variant} has no fused kernel"
    if variant == "lln_diag" and block_size is None and isinstance(q, torch.Tensor) and q.dim() == 4:
        block_size = q.shape[-1]
    return _unsupported(q, k, v, mask, causal, dropout_p, block_size if variant == "lln_diag" else None)


def fused_lln_attention(q, k, v, mask=None, *, scale=None, eps=1e-6, stats="per_sequence") -> torch.Tensor:
    """Non-causal LLN attention on inputs the dispatcher accepted. q, k: (batch, heads, seq, head_dim),
    v: (batch, heads, seq, v_dim), mask: (batch, seq) bool (True = real token) or None -> (batch, heads, seq,
    v_dim) in q's dtype."""
    from hf_lln.ops.triton.functions import fused_lln

    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return fused_lln(q, k, v, mask, None, None, block_size=None, scale=scale, eps=eps, stats=stats)


def _mix_weights(mix, lln_weight, diag_weight, heads, v_dim, like):
    """(w_lln, w_diag): (heads, v_dim) float32, differentiable w.r.t. the learnable weights (already checked)."""
    if mix == "average":
        half = torch.full((heads, v_dim), 0.5, dtype=torch.float32, device=like.device)
        return half, half
    if mix == "learnable_scale":
        return lln_weight.float().contiguous(), diag_weight.float().contiguous()
    ratio = lln_weight.float()
    return ratio.contiguous(), (1.0 - ratio).contiguous()


def fused_lln_diag_attention(
    q,
    k,
    v,
    mask=None,
    *,
    mix="average",
    lln_weight=None,
    diag_weight=None,
    block_size=None,
    scale=None,
    eps=1e-6,
    stats="per_sequence",
) -> torch.Tensor:
    """LLN mixed with softmax inside diagonal blocks of ``block_size`` tokens (default head_dim), on inputs the
    dispatcher accepted.

    Shapes as ``fused_lln_attention``; ``lln_weight, diag_weight: (heads, v_dim)`` for the learnable mixes
    (``learnable_ratio`` uses ``lln_weight`` as the ratio r: r * lln + (1 - r) * diag).
    """
    from hf_lln.ops.triton.functions import fused_lln

    block_size = q.shape[-1] if block_size is None else block_size
    w_lln, w_diag = _mix_weights(mix, lln_weight, diag_weight, q.shape[1], v.shape[-1], q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return fused_lln(q, k, v, mask, w_lln, w_diag, block_size=block_size, scale=scale, eps=eps, stats=stats)
