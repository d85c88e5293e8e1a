"""Baseline linear attentions for comparison, in the same form as the LLN operators.

- ``linear_elu``: ``phi(x) = elu(x) + 1`` (Katharopoulos et al., 2020).
- ``performer``: FAVOR+ positive orthogonal random features (Choromanski et al., 2021),
  ``phi(x) = exp(W x' - |x'|²/2) / sqrt(m)`` with ``x' = scale^(1/2)·x``, so ``phi(q)·phi(k)`` estimates
  ``exp(scale·q·k)``; the projection ``W`` is fixed per layer (``performer_projection`` with a seed).
- ``cosformer``: ReLU features re-weighted by ``cos(π (i - j) / 2M)`` over token positions (Qin et al., 2022),
  through the decomposition ``cos(a - b) = cos a cos b + sin a sin b``. Positions count real tokens only and M is
  the number of real tokens, so padding does not move them.

None of them has probabilities to drop out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hf_lln.ops._checks import (
    check_positive_float,
    check_positive_int,
    check_qkv,
    check_scale,
    check_tensor,
    compute_dtype,
    default_scale,
)
from hf_lln.ops.linear import exp_feature_attention, feature_attention


def _prepare(q, k, v, mask, eps, chunk_size):
    check_qkv(q, k, v, mask)
    check_positive_float("eps", eps)
    check_positive_int("chunk_size", chunk_size)
    dtype = compute_dtype(q.dtype)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1`` written as ``x + 1`` or ``exp(x)``: ``F.elu``'s backward, decomposed by ``torch.compile``'s
    AOT autograd, takes a ``view`` that fails on the transposed q, k Transformers hands over. The clamp keeps the
    unused ``exp`` branch finite, so its zero gradient stays zero."""
    return torch.where(x > 0, x + 1.0, torch.exp(x.clamp_max(0.0)))


def linear_elu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = False,
    eps: float = 1e-6,
    chunk_size: int = 64,
) -> torch.Tensor:
    """``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)`` -> ``(batch, heads, seq, v_dim)``."""
    in_dtype = q.dtype
    q, k, v = _prepare(q, k, v, mask, eps, chunk_size)
    out = feature_attention(
        _elu_plus_one(q),
        _elu_plus_one(k),
        v,
        mask,
        causal=causal,
        normaliser="sum",
        eps=eps,
        chunk_size=chunk_size,
    )
    return out.to(in_dtype)


def performer_projection(
    num_features: int,
    head_dim: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Gaussian orthogonal random features ``W: (num_features, head_dim)``: stacked orthogonal blocks whose rows are
    rescaled to the norms of Gaussian vectors, drawn from a generator seeded with ``seed`` (deterministic)."""
    check_positive_int("num_features", num_features)
    check_positive_int("head_dim", head_dim)
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(num_features / head_dim)):
        gaussian = torch.randn(head_dim, head_dim, generator=generator, dtype=torch.float64)
        orthogonal, _ = torch.linalg.qr(gaussian)
        blocks.append(orthogonal.T)
    rows = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, head_dim, generator=generator, dtype=torch.float64).norm(
        dim=1, keepdim=True
    )
    return (rows * norms).to(dtype=dtype, device=device)


def performer_log_features(q, k, projection, scale):
    """Log-features ``lq, lk: (batch, heads, seq, num_features)`` with ``A_ij ∝ Σ_r exp(lq_ir + lk_jr)``.

    The query term ``-|q'|²/2`` and the ``1/sqrt(m)`` factors are constant along a row and cancel in the ratio.
    """
    root = default_scale(scale, q.shape[-1]) ** 0.5
    w = projection.to(q.dtype).T
    q_scaled, k_scaled = q * root, k * root
    lq = q_scaled @ w
    lk = k_scaled @ w - 0.5 * k_scaled.pow(2).sum(dim=-1, keepdim=True)
    return lq, lk


def performer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    projection: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    eps: float = 1e-6,
    chunk_size: int = 64,
) -> torch.Tensor:
    """FAVOR+ attention. ``projection: (num_features, head_dim)`` from ``performer_projection``.
    ``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)`` -> ``(batch, heads, seq, v_dim)``."""
    in_dtype = q.dtype
    check_scale(scale)
    check_tensor("projection", projection, 2, f"(num_features, head_dim={q.shape[-1]})")
    if not torch.jit.is_tracing() and projection.shape[1] != q.shape[-1]:
        raise ValueError(
            f"projection must have shape (num_features, head_dim={q.shape[-1]}), got {tuple(projection.shape)}"
        )
    q, k, v = _prepare(q, k, v, mask, eps, chunk_size)
    lq, lk = performer_log_features(q, k, projection.to(q.device), scale)
    return exp_feature_attention(lq, lk, v, mask, causal=causal, eps=eps, chunk_size=chunk_size).to(in_dtype)


def cosformer_angles(mask: torch.Tensor | None, batch: int, seq: int, device, dtype) -> torch.Tensor:
    """``theta_i = π·pos_i / (2M)``: ``(batch, 1, seq, 1)``, pos counting real tokens, M the number of real tokens."""
    if mask is None:
        positions = torch.arange(seq, device=device, dtype=dtype).expand(batch, seq)
        length = torch.full((batch, 1), float(seq), device=device, dtype=dtype)
    else:
        positions = (mask.long().cumsum(dim=1) - 1).clamp_min(0).to(dtype)  # ONNX sums no bools
        length = mask.sum(dim=1, keepdim=True).clamp_min(1).to(dtype)
    return (math.pi / 2 * positions / length)[:, None, :, None]


def cosformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = False,
    eps: float = 1e-6,
    chunk_size: int = 64,
) -> torch.Tensor:
    """``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)`` -> ``(batch, heads, seq, v_dim)``."""
    in_dtype = q.dtype
    q, k, v = _prepare(q, k, v, mask, eps, chunk_size)
    theta = cosformer_angles(mask, q.shape[0], q.shape[2], q.device, q.dtype)
    cos, sin = torch.cos(theta), torch.sin(theta)
    relu_q, relu_k = F.relu(q), F.relu(k)
    phi_q = torch.cat([relu_q * cos, relu_q * sin], dim=-1)
    phi_k = torch.cat([relu_k * cos, relu_k * sin], dim=-1)
    out = feature_attention(
        phi_q, phi_k, v, mask, causal=causal, normaliser="sum", eps=eps, chunk_size=chunk_size
    )
    return out.to(in_dtype)
