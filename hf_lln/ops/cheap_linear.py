"""Cheap linear attention (de Brébisson & Vincent, 2016): attention without softmax or feature map.

``out_i = (1/n) Σ_j (scale·q_i·k_j) v_j`` over the n visible real keys. Because nothing non-linear sits between q
and k, a sequence folds into a fixed-size state ``C = Σ_j k_j v_j^T: (head_dim, v_dim)`` and each query costs
O(head_dim·v_dim) whatever the length: ``cheap_linear_encode`` / ``cheap_linear_lookup`` expose exactly that.
The scores are signed and unnormalised, so there are no probabilities to drop out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_lln.ops._checks import (
    check_positive_int,
    check_qkv,
    check_scale,
    check_tensor,
    compute_dtype,
    default_scale,
)
from hf_lln.ops.dispatch import choose_backend, triton_kernels
from hf_lln.ops.linear import feature_attention


def cheap_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    chunk_size: int = 64,
) -> torch.Tensor:
    """``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)``, ``mask: (batch, seq)`` bool
    -> ``(batch, heads, seq, v_dim)``. ``scale`` defaults to ``head_dim**-0.5``; causal rows average over
    the keys up to and including themselves."""
    check_qkv(q, k, v, mask)
    check_scale(scale)
    check_positive_int("chunk_size", chunk_size)
    if choose_backend("cheap_linear", q, k, v, mask, causal=causal) == "triton":
        return triton_kernels.run_cheap_linear(q, k, v, mask, scale=scale)
    in_dtype, dtype = q.dtype, compute_dtype(q.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    q = q * default_scale(scale, q.shape[-1])
    out = feature_attention(q, k, v, mask, causal=causal, normaliser="count", eps=1.0, chunk_size=chunk_size)
    return out.to(in_dtype)


@dataclass
class CheapLinearState:
    """A sequence folded into a fixed size: ``kv: (batch, heads, head_dim, v_dim)`` = Σ_j k_j v_j^T over real
    keys and ``count: (batch, 1, 1, 1)`` the number of real keys."""

    kv: torch.Tensor
    count: torch.Tensor


def cheap_linear_encode(
    k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> CheapLinearState:
    """Fold ``k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)`` into a ``CheapLinearState``."""
    check_qkv(k, k, v, mask)
    dtype = compute_dtype(k.dtype)
    k, v = k.to(dtype), v.to(dtype)
    if mask is None:
        count = torch.full((k.shape[0], 1, 1, 1), float(k.shape[2]), dtype=dtype, device=k.device)
    else:
        k = k.masked_fill(~mask[:, None, :, None], 0.0)
        count = mask.sum(dim=1).to(dtype).reshape(-1, 1, 1, 1)
    return CheapLinearState(k.transpose(-1, -2) @ v, count)


def cheap_linear_lookup(q: torch.Tensor, state: CheapLinearState, scale: float | None = None) -> torch.Tensor:
    """Answer ``q: (batch, heads, queries, head_dim)`` from ``state`` -> ``(batch, heads, queries, v_dim)``."""
    if not isinstance(state, CheapLinearState):
        raise TypeError(
            f"state must be the CheapLinearState that cheap_linear_encode returns, got {type(state).__name__}; "
            "a bare (batch, heads, d, d) tensor lacks the key count: use CheapLinearState(kv, count)"
        )
    check_tensor("q", q, 4, "(batch, heads, queries, head_dim)")
    expected = tuple(state.kv.shape[:3])
    if (q.shape[0], q.shape[1], q.shape[3]) != expected:
        raise ValueError(
            f"q must have shape (batch, heads, queries, head_dim) with (batch, heads, head_dim) = {expected}, got {tuple(q.shape)}"
        )
    check_scale(scale)
    q_scaled = q.to(state.kv.dtype) * default_scale(scale, q.shape[-1])
    return ((q_scaled @ state.kv) / state.count.clamp_min(1.0)).to(q.dtype)
