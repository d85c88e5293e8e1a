"""Linear-attention engines shared by the variants: O(seq) time, O(seq·d + d²) memory per head.

Two engines cover every variant:

- ``exp_feature_attention`` for features given by their logarithms, ``A_ij = Σ_r exp(lq_ir + lk_jr)``
  (LLN: ``lq = alpha·q``, ``lk = beta·k``; Performer's positive random features). It stabilises with maxima that
  cancel in the ratio, so every feature lies in [0, 1] and the normaliser of a row with a real key is at least 1.
- ``feature_attention`` for explicit features, ``A_ij = phi_q(q_i)·phi_k(k_j)``, normalised by the row sum
  (linear_elu, cosformer) or by the number of visible keys (cheap linear attention, whose features are signed).

Inputs are already in the compute dtype (float32 for half-precision callers). ``mask: (batch, seq)`` bool marks
real keys; rows with no visible key give zeros. The normaliser is floored at ``eps`` rather than shifted by it:
after stabilisation it is at least 1 wherever a key is visible, so the floor only guards empty rows and the
result equals the exact normalised attention.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``(batch, seq)`` -> ``(batch, 1, seq, 1)`` to broadcast over heads and features."""
    return None if mask is None else mask[:, None, :, None]


def stabilised_exp_features(
    lq: torch.Tensor, lk: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``phi_q, phi_k`` in [0, 1] with ``phi_q_i·phi_k_j = A_ij / exp(m_i)`` for a per-row constant m_i.

    ``lq, lk: (batch, heads, seq, r)``. With ``M_r`` the maximum of ``lk`` over real keys and
    ``m_i = max_r(lq_ir + M_r)``: ``phi_q = exp(lq + M - m)``, ``phi_k = exp(lk - M)`` (zero on padded keys).
    The maxima carry no gradient; they cancel in the ratio.
    """
    key_mask = _key_mask(mask)
    if key_mask is not None:
        lk = lk.masked_fill(~key_mask, float("-inf"))
    with torch.no_grad():
        key_max = lk.amax(dim=2, keepdim=True)
        key_max = torch.where(torch.isfinite(key_max), key_max, torch.zeros_like(key_max))
        row_max = (lq + key_max).amax(dim=-1, keepdim=True)
    phi_q = torch.exp(lq + key_max - row_max)
    phi_k = torch.exp(lk - key_max)
    return phi_q, phi_k


def _normalised_product(phi_q, phi_k, v, eps):
    kv = phi_k.transpose(-1, -2) @ v
    key_sum = phi_k.sum(dim=2).unsqueeze(-1)
    return (phi_q @ kv) / (phi_q @ key_sum).clamp_min(eps)


def exp_feature_attention(
    lq: torch.Tensor,
    lk: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    causal: bool,
    eps: float,
    chunk_size: int,
) -> torch.Tensor:
    """``out_i = Σ_j A_ij v_j / Σ_j A_ij`` with ``A_ij = Σ_r exp(lq_ir + lk_jr)`` over visible keys.

    ``lq, lk: (batch, heads, seq, r)``, ``v: (batch, heads, seq, v_dim)``.
    """
    if not causal:
        phi_q, phi_k = stabilised_exp_features(lq, lk, mask)
        return _normalised_product(phi_q, phi_k, v, eps)
    return _causal_exp_feature_attention(lq, lk, v, mask, eps, chunk_size)


def _chunk_logits(lq_chunk: torch.Tensor, lk_chunk: torch.Tensor) -> torch.Tensor:
    """``L_ij = logsumexp_r(lq_ir + lk_jr)``: ``(batch, heads, C, r) x2 -> (batch, heads, C, C)``."""
    return torch.logsumexp(lq_chunk.unsqueeze(3) + lk_chunk.unsqueeze(2), dim=-1)


def _causal_exp_feature_attention(lq, lk, v, mask, eps, chunk_size):
    """Chunked causal form, exact for any input spread.

    Inside a chunk the logits are taken in log space (``logsumexp`` over features), so no factorisation can
    overflow or underflow; earlier chunks are folded into a state ``S_r = Σ_j exp(lk_jr - ref_r) v_j`` kept relative
    to the running per-feature key maximum ``ref_r``. Each row is scaled by its own maximum over both parts. The
    intra-chunk logits (``C x C x r`` per chunk) are recomputed in the backward pass instead of stored, so memory
    stays O(seq·(r + C)).
    """
    batch, heads, seq, _ = lq.shape
    key_mask = torch.ones(batch, seq, dtype=torch.bool, device=lq.device) if mask is None else mask
    state = lq.new_zeros(batch, heads, lq.shape[-1], v.shape[-1])
    state_sum = lq.new_zeros(batch, heads, lq.shape[-1], 1)
    ref = lq.new_full((batch, heads, 1, lq.shape[-1]), float("-inf"))
    neg_inf = torch.tensor(float("-inf"), dtype=lq.dtype, device=lq.device)
    outputs = []
    for start in range(0, seq, chunk_size):
        end = min(start + chunk_size, seq)
        lq_c, lk_c, v_c = lq[:, :, start:end], lk[:, :, start:end], v[:, :, start:end]
        keys_c = key_mask[:, None, None, start:end]
        visible = keys_c & torch.ones(end - start, end - start, dtype=torch.bool, device=lq.device).tril()
        if torch.is_grad_enabled() and (lq_c.requires_grad or lk_c.requires_grad):
            logits = checkpoint(_chunk_logits, lq_c, lk_c, use_reentrant=False)
        else:
            logits = _chunk_logits(lq_c, lk_c)
        logits = torch.where(visible, logits, neg_inf)
        inter_logits = lq_c + ref
        with torch.no_grad():
            row_max = torch.maximum(
                inter_logits.amax(dim=-1, keepdim=True), logits.amax(dim=-1, keepdim=True)
            )
            row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        phi_inter = torch.exp(inter_logits - row_max)
        weights = torch.exp(logits - row_max)
        numerator = phi_inter @ state + weights @ v_c
        denominator = phi_inter @ state_sum + weights.sum(dim=-1, keepdim=True)
        outputs.append(numerator / denominator.clamp_min(eps))

        lk_real = torch.where(key_mask[:, None, start:end, None], lk_c, neg_inf)
        with torch.no_grad():
            new_ref = torch.maximum(ref, lk_real.amax(dim=2, keepdim=True))
            new_ref = torch.where(torch.isfinite(new_ref), new_ref, torch.zeros_like(new_ref))
            decay = torch.exp(ref - new_ref).transpose(-1, -2)
        phi_k = torch.exp(lk_real - new_ref)
        state = state * decay + phi_k.transpose(-1, -2) @ v_c
        state_sum = state_sum * decay + phi_k.sum(dim=2).unsqueeze(-1)
        ref = new_ref
    return torch.cat(outputs, dim=2)


def feature_attention(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    causal: bool,
    normaliser: str,
    eps: float,
    chunk_size: int,
) -> torch.Tensor:
    """``out_i = Σ_j (phi_q_i·phi_k_j) v_j / D_i`` over visible keys.

    ``phi_q, phi_k: (batch, heads, seq, r)``. ``normaliser="sum"``: ``D_i = Σ_j phi_q_i·phi_k_j`` (non-negative
    features); ``normaliser="count"``: ``D_i`` = the number of visible keys.
    """
    key_mask = _key_mask(mask)
    if key_mask is not None:
        phi_k = phi_k.masked_fill(~key_mask, 0.0)
    counts = (
        phi_k.new_ones(phi_k.shape[:3] + (1,))
        if key_mask is None
        else key_mask.to(phi_k.dtype).expand(phi_k.shape[:3] + (1,))
    )
    if not causal:
        numerator = phi_q @ (phi_k.transpose(-1, -2) @ v)
        if normaliser == "sum":
            denominator = phi_q @ phi_k.sum(dim=2).unsqueeze(-1)
        else:
            denominator = counts.sum(dim=2, keepdim=True)
        return numerator / denominator.clamp_min(eps)
    return _causal_feature_attention(phi_q, phi_k, v, counts, normaliser, eps, chunk_size)


def _causal_feature_attention(phi_q, phi_k, v, counts, normaliser, eps, chunk_size):
    """Chunked causal form: dense lower-triangular products inside chunks, exclusive prefix sums of chunk states
    across them (no Python loop over chunks)."""
    batch, heads, seq, rank = phi_q.shape
    pad = (-seq) % chunk_size
    if pad:
        phi_q, phi_k, v, counts = (
            torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (phi_q, phi_k, v, counts)
        )
    chunks = (seq + pad) // chunk_size

    def split(t):
        return t.reshape(batch, heads, chunks, chunk_size, t.shape[-1])

    phi_q, phi_k, v, counts = split(phi_q), split(phi_k), split(v), split(counts)
    tril = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=v.device).tril()
    scores = (phi_q @ phi_k.transpose(-1, -2)).masked_fill(~tril, 0.0)
    chunk_states = phi_k.transpose(-1, -2) @ v
    prefix_states = chunk_states.cumsum(dim=2) - chunk_states
    numerator = scores @ v + phi_q @ prefix_states
    if normaliser == "sum":
        chunk_sums = phi_k.sum(dim=3, keepdim=True)
        prefix_sums = chunk_sums.cumsum(dim=2) - chunk_sums
        denominator = scores.sum(dim=-1, keepdim=True) + phi_q @ prefix_sums.transpose(-1, -2)
    else:
        denominator = counts.cumsum(dim=3) + (
            counts.sum(dim=3, keepdim=True).cumsum(dim=2) - counts.sum(dim=3, keepdim=True)
        )
    out = numerator / denominator.clamp_min(eps)
    return out.reshape(batch, heads, chunks * chunk_size, -1)[:, :, :seq]
