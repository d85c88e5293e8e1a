"""Fused Triton kernels for non-causal LLN, LLN + Diag and cheap linear attention (optional; triton is
imported lazily).

Same functions as ``hf_lln.ops.lln_attention`` / ``lln_diag_attention`` / ``cheap_linear_attention``
restricted to what the kernels handle (``unsupported_reason``): CUDA tensors of one dtype (float32,
bfloat16, float16), ``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)`` with
head_dim and v_dim in {16, 32, 64, 128} (128 for bf16/fp16 only: 128-wide float32 tiles overflow shared
memory), any strides with a last stride of 1 (others are copied), key padding ``mask: (batch, seq)``
bool or None, non-causal, diagonal blocks of at most 128 tokens (64 for float32). LLN + Diag takes
attention dropout on its block softmax (``dropout_p``; LLN and cheap linear attention have no probabilities
to drop). Differentiable w.r.t. q, k, v and the mix weights; alpha and beta carry no gradient, as in the PyTorch
path. Design and measurements: docs/kernels.md.
"""

from __future__ import annotations

import importlib.util

import torch

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SUPPORTED_DIMS = (16, 32, 64, 128)
MAX_BLOCK_SIZE = 128
# float32 tiles of wider blocks or heads need more shared memory than an H100 has (compiler's report).
MAX_FLOAT32_BLOCK_SIZE = 64
MAX_FLOAT32_DIM = 64
MIX_MODES = ("average", "learnable_scale", "learnable_ratio")
STATS_MODES = ("per_sequence", "global")
VARIANTS = ("lln", "lln_diag", "cheap_linear")
# The dropout generator counts in 32 bits: row * register_block(block_size) / 4 + column / 4
# (kernels._dropout_keep).
MAX_DROPOUT_COUNTER = 2**31


def register_block(rows: int) -> int:
    """The power-of-two width, at least 16, of the register tiles that hold ``rows`` rows (a diagonal
    block's)."""
    return max(16, 1 << (rows - 1).bit_length())


# Looked up once, when the package is imported: torch.compile cannot trace importlib.
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def is_available() -> bool:
    """True when triton is importable and a CUDA device is present."""
    return TRITON_INSTALLED and torch.cuda.is_available()


def unsupported_reason(
    variant: str,
    q,
    k,
    v,
    mask=None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
    block_size: int | None = None,
) -> str | None:
    """Why the fused kernels cannot compute ``variant`` (one of ``VARIANTS``) on these arguments, or None
    when they can, CUDA and triton included: the one test a dispatcher needs. Shapes as the functions'.

    ``block_size`` (None = head_dim) is LLN + Diag's; ``dropout_p`` must be 0 except for LLN + Diag.
    """
    if variant not in VARIANTS:
        return f"{variant} has no fused kernels (fused: {', '.join(VARIANTS)})"
    reason = _unsupported_inputs(q, k, v, mask, causal)
    if reason is None and variant == "lln_diag":
        block = q.shape[3] if block_size is None else block_size
        reason = _unsupported_block(q.dtype, block) or _unsupported_dropout(dropout_p, q.shape[2], block)
    elif reason is None:
        if dropout_p != 0.0:
            reason = f"dropout_p must be 0.0 for {variant} (no attention probabilities), got {dropout_p}"
        elif block_size is not None:
            reason = f"block_size applies to lln_diag only; {variant} takes None, got {block_size}"
    if reason is None and not is_available():
        reason = "the fused kernels need triton and a CUDA device"
    return reason


def _unsupported_inputs(q, k, v, mask, causal) -> str | None:
    """Why the kernels cannot take these q, k, v, mask, or None when they can."""
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
    return None


def _unsupported_block(dtype, block_size) -> str | None:
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        return f"block_size must be in [1, {MAX_BLOCK_SIZE}], got {block_size}"
    if dtype == torch.float32 and block_size > MAX_FLOAT32_BLOCK_SIZE:
        return f"block_size must be at most {MAX_FLOAT32_BLOCK_SIZE} for float32 inputs, got {block_size}"
    return None


def _unsupported_dropout(dropout_p, seq, block_size) -> str | None:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        return f"dropout_p must be a number in [0, 1), got {dropout_p!r}"
    counters = register_block(block_size) // 4  # the keep mask's Philox counters per row
    if dropout_p > 0.0 and seq * counters >= MAX_DROPOUT_COUNTER:
        return (
            f"dropout needs seq * {counters} < 2**31 ({counters} Philox counters per row for block_size "
            f"{block_size}), got seq {seq}"
        )
    return None


def supports(
    q, k, v, mask, *, causal: bool, dropout_p: float, block_size: int | None = None, variant: str = "lln_diag"
) -> bool:
    """Whether the fused kernels compute ``variant`` on these inputs (``unsupported_reason`` is None).
    The default variant answers for LLN too when called with ``dropout_p=0`` and no ``block_size``."""
    return (
        unsupported_reason(variant, q, k, v, mask, causal=causal, dropout_p=dropout_p, block_size=block_size)
        is None
    )


def _check(variant, q, k, v, mask, *, block_size=None, dropout_p=0.0, stats="per_sequence"):
    reason = unsupported_reason(variant, q, k, v, mask, dropout_p=dropout_p, block_size=block_size)
    if reason is not None:
        raise ValueError(reason)
    if stats not in STATS_MODES:
        raise ValueError(f"stats must be one of {STATS_MODES}, got {stats!r}")


def fused_lln_attention(q, k, v, mask=None, *, scale=None, eps=1e-6, stats="per_sequence") -> torch.Tensor:
    """Non-causal LLN attention; raises ``ValueError`` for inputs the kernels cannot take. q, k: (batch, heads,
    seq, head_dim), v: (batch, heads, seq, v_dim), mask: (batch, seq) bool (True = real token) or None ->
    (batch, heads, seq, v_dim) in q's dtype."""
    _check("lln", q, k, v, mask, stats=stats)
    return run_lln(q, k, v, mask, scale=scale, eps=eps, stats=stats)


def run_lln(q, k, v, mask=None, *, scale=None, eps=1e-6, stats="per_sequence") -> torch.Tensor:
    """``fused_lln_attention`` on inputs ``unsupported_reason`` accepted (the dispatcher's call)."""
    from hf_lln.ops.triton.functions import fused_lln

    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return fused_lln(q, k, v, mask, None, None, block_size=None, scale=scale, eps=eps, stats=stats)


def _mix_weights(mix, lln_weight, diag_weight):
    """(w_lln, w_diag): (heads, v_dim) float32, differentiable w.r.t. the learnable weights; (None, None) for the
    average mix, whose halves are constants of the kernels."""
    if mix == "average":
        return None, None
    if mix == "learnable_scale":
        return lln_weight.float().contiguous(), diag_weight.float().contiguous()
    ratio = lln_weight.float()
    return ratio.contiguous(), (1.0 - ratio).contiguous()


def _check_mix(mix, lln_weight, diag_weight, heads, v_dim, like) -> None:
    if mix not in MIX_MODES:
        raise ValueError(f"mix must be one of {MIX_MODES}, got {mix!r}")
    needed = {
        "average": (),
        "learnable_scale": ("lln_weight", "diag_weight"),
        "learnable_ratio": ("lln_weight",),
    }
    for name in needed[mix]:
        weight = {"lln_weight": lln_weight, "diag_weight": diag_weight}[name]
        if not isinstance(weight, torch.Tensor) or weight.shape != (heads, v_dim):
            got = None if weight is None else tuple(weight.shape)
            raise ValueError(f"mix={mix!r} needs {name} of shape {(heads, v_dim)}, got {got}")
        if weight.device != like.device:
            raise ValueError(f"{name} must be on {like.device}, got {weight.device}")


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
    dropout_p=0.0,
) -> torch.Tensor:
    """LLN mixed with softmax inside diagonal blocks of ``block_size`` tokens (default head_dim); raises
    ``ValueError`` for inputs the kernels cannot take.

    Shapes as ``fused_lln_attention``; ``lln_weight, diag_weight: (heads, v_dim)`` for the learnable mixes
    (``learnable_ratio`` uses ``lln_weight`` as the ratio r: r * lln + (1 - r) * diag). ``dropout_p``
    drops the block softmax's probabilities (kept ones scaled by ``1 / (1 - dropout_p)``, as
    ``block_diag_attention`` / SDPA) with a seed from torch's generator for q's device.
    """
    _check_mix(mix, lln_weight, diag_weight, q.shape[1], v.shape[-1], q)
    block = q.shape[-1] if block_size is None else block_size
    _check("lln_diag", q, k, v, mask, block_size=block, dropout_p=dropout_p, stats=stats)
    return run_lln_diag(
        q,
        k,
        v,
        mask,
        mix=mix,
        lln_weight=lln_weight,
        diag_weight=diag_weight,
        block_size=block_size,
        scale=scale,
        eps=eps,
        stats=stats,
        dropout_p=dropout_p,
    )


def run_lln_diag(
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
    dropout_p=0.0,
) -> torch.Tensor:
    """``fused_lln_diag_attention`` on inputs ``unsupported_reason`` accepted (the dispatcher's call)."""
    from hf_lln.ops.triton.functions import fused_lln

    block_size = q.shape[-1] if block_size is None else block_size
    w_lln, w_diag = _mix_weights(mix, lln_weight, diag_weight)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return fused_lln(
        q,
        k,
        v,
        mask,
        w_lln,
        w_diag,
        block_size=block_size,
        scale=scale,
        eps=eps,
        stats=stats,
        dropout_p=dropout_p,
    )


def fused_cheap_linear_attention(q, k, v, mask=None, *, scale=None) -> torch.Tensor:
    """Non-causal cheap linear attention, ``out_i = (scale / n) q_i sum_j k_j v_j^T`` over the n real
    keys (``hf_lln.ops.cheap_linear_attention``); raises ``ValueError`` for inputs the kernels cannot take.
    q, k: (batch, heads, seq, head_dim), v: (batch, heads, seq, v_dim), mask: (batch, seq) bool or None ->
    (batch, heads, seq, v_dim) in q's dtype."""
    _check("cheap_linear", q, k, v, mask)
    return run_cheap_linear(q, k, v, mask, scale=scale)


def run_cheap_linear(q, k, v, mask=None, *, scale=None) -> torch.Tensor:
    """``fused_cheap_linear_attention`` on inputs ``unsupported_reason`` accepted (the dispatcher's call)."""
    from hf_lln.ops.triton.cheap_linear import fused_cheap_linear

    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return fused_cheap_linear(q, k, v, mask, scale=scale)
