"""LLN attention (Linear Log-Normal attention, Nahshan et al., ICLR 2024).

``A_ij = phi_q(q_i)·phi_k(k_j) = Σ_c exp(alpha q_ic + beta k_jc)`` over real keys, normalised per row, with alpha
and beta from moment matching (``hf_lln.ops.moments``): the variance of log attention equals softmax's for the
same q, k and scale. Statistics are taken per sequence and head over real tokens (``stats="per_sequence"``), so a
sequence's output does not depend on its batch mates or its padding; ``stats="global"`` takes one scalar over the
whole tensor, as the paper's reference code does.

There are no attention probabilities to drop out: dropout, where the caller wants it, applies to the
block-diagonal softmax of LLN+Diag only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_lln.ops._checks import (
    check_choice,
    check_positive_float,
    check_positive_int,
    check_qkv,
    check_scale,
    check_tensor,
    compute_dtype,
)
from hf_lln.ops.dispatch import choose_backend, triton_kernels
from hf_lln.ops.linear import exp_feature_attention
from hf_lln.ops.moments import STATS_MODES, lln_feature_scales, query_key_std, token_std


def lln_scales(q, k, mask, *, scale, stats) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment-matched ``alpha, beta: (batch, heads, 1, 1)`` for ``q, k: (batch, heads, seq, head_dim)``."""
    q_std, k_std = query_key_std(q, k, mask, stats)
    alpha, beta = lln_feature_scales(q_std, k_std, q.shape[-1], scale)
    return alpha[..., None, None], beta[..., None, None]


def check_lln_args(q, k, v, mask, *, scale, eps, stats, chunk_size) -> None:
    check_qkv(q, k, v, mask)
    check_scale(scale)
    check_positive_float("eps", eps)
    check_choice("stats", stats, STATS_MODES)
    check_positive_int("chunk_size", chunk_size)


def lln_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    eps: float = 1e-6,
    stats: str = "per_sequence",
    chunk_size: int = 64,
) -> torch.Tensor:
    """LLN attention. ``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)``,
    ``mask: (batch, seq)`` bool (True = real token) -> ``(batch, heads, seq, v_dim)``.

    ``scale`` is the softmax temperature being matched (default ``head_dim**-0.5``). Non-causal: O(seq·d + d²)
    memory per head, never seq x seq. Causal: chunks of ``chunk_size`` (see ``hf_lln.ops.linear``). ``eps`` floors
    the normaliser, which is at least 1 for any row with a visible key, so it only turns empty rows into zeros.
    """
    check_lln_args(q, k, v, mask, scale=scale, eps=eps, stats=stats, chunk_size=chunk_size)
    if choose_backend("lln", q, k, v, mask, causal=causal) == "triton":
        return triton_kernels.run_lln(q, k, v, mask, scale=scale, eps=eps, stats=stats)
    return lln_torch(q, k, v, mask, causal=causal, scale=scale, eps=eps, stats=stats, chunk_size=chunk_size)


def lln_torch(q, k, v, mask=None, *, causal=False, scale=None, eps=1e-6, stats="per_sequence", chunk_size=64):
    """``lln_attention``'s PyTorch path on inputs already validated."""
    in_dtype, dtype = q.dtype, compute_dtype(q.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    alpha, beta = lln_scales(q, k, mask, scale=scale, stats=stats)
    out = exp_feature_attention(alpha * q, beta * k, v, mask, causal=causal, eps=eps, chunk_size=chunk_size)
    return out.to(in_dtype)


@dataclass
class LLNState:
    """A sequence folded into a fixed size: ``kv: (batch, heads, head_dim, v_dim)`` = Σ_j phi_k(k_j) v_j^T,
    ``key_sum: (batch, heads, head_dim)`` = Σ_j phi_k(k_j), ``key_max: (batch, heads, head_dim)`` the stabilising
    per-channel maxima folded out of phi_k, and ``alpha: (batch, heads)`` the query scale the lookups use."""

    kv: torch.Tensor
    key_sum: torch.Tensor
    key_max: torch.Tensor
    alpha: torch.Tensor


def lln_encode(
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    q_std: float | torch.Tensor,
    scale: float | None = None,
    stats: str = "per_sequence",
) -> LLNState:
    """Fold keys and values into an ``LLNState`` whose size does not depend on seq.

    Moment matching ties beta to the spread of the queries as well as the keys, so the encoder needs the query
    standard deviation ``q_std`` (a float or ``(batch, heads)``); lookups with queries of that spread reproduce
    ``lln_attention`` exactly.
    """
    check_qkv(k, k, v, mask)
    check_scale(scale)
    check_choice("stats", stats, STATS_MODES)
    batch, heads = k.shape[:2]
    dtype = compute_dtype(k.dtype)
    k, v = k.to(dtype), v.to(dtype)
    k_std = token_std(k, mask, stats)
    q_std = torch.as_tensor(q_std, dtype=dtype, device=k.device).expand(batch, heads)
    alpha, beta = lln_feature_scales(q_std, k_std, k.shape[-1], scale)
    lk = beta[..., None, None] * k
    if mask is not None:
        lk = lk.masked_fill(~mask[:, None, :, None], float("-inf"))
    key_max = lk.amax(dim=2)
    key_max = torch.where(torch.isfinite(key_max), key_max, torch.zeros_like(key_max)).detach()
    phi_k = torch.exp(lk - key_max.unsqueeze(2))
    return LLNState(phi_k.transpose(-1, -2) @ v, phi_k.sum(dim=2), key_max, alpha)


def lln_lookup(q: torch.Tensor, state: LLNState, eps: float = 1e-6) -> torch.Tensor:
    """Answer ``q: (batch, heads, queries, head_dim)`` from ``state`` in O(head_dim·v_dim) per query."""
    if not isinstance(state, LLNState):
        raise TypeError(f"state must be the LLNState that lln_encode returns, got {type(state).__name__}")
    check_tensor("q", q, 4, "(batch, heads, queries, head_dim)")
    expected = tuple(state.key_sum.shape)
    if (q.shape[0], q.shape[1], q.shape[3]) != expected:
        raise ValueError(
            f"q must have shape (batch, heads, queries, head_dim) with (batch, heads, head_dim) = {expected}, got {tuple(q.shape)}"
        )
    check_positive_float("eps", eps)
    lq = state.alpha[..., None, None] * q.to(state.kv.dtype) + state.key_max.unsqueeze(2)
    phi_q = torch.exp(lq - lq.amax(dim=-1, keepdim=True).detach())
    out = (phi_q @ state.kv) / (phi_q @ state.key_sum.unsqueeze(-1)).clamp_min(eps)
    return out.to(q.dtype)
