"""Dense O(seq²) references: each variant's formula stated plainly, usable in float64.

Every function builds the full ``(batch, heads, seq, seq)`` attention matrix, so it is for tests and analysis on
short sequences only. ``visible[b, i, j]`` is True where query i may use key j (a real key, and j <= i when
causal); rows with no visible key give zeros. Nothing here imports the fast paths: the only import from the
package is the table of moment-matching constants ``(a, b)`` per head size, which is data, not code, and
defines LLN's alpha and beta.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hf_lln.ops.moments import MIN_STD, moment_constants


def visible_keys(mask: torch.Tensor | None, batch: int, seq: int, causal: bool, device) -> torch.Tensor:
    """``(batch, 1, seq, seq)`` bool: query i may attend to key j."""
    visible = torch.ones(batch, 1, seq, seq, dtype=torch.bool, device=device)
    if mask is not None:
        visible = visible & mask[:, None, None, :]
    if causal:
        visible = visible & torch.ones(seq, seq, dtype=torch.bool, device=device).tril()
    return visible


def normalise_rows(weights: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Row-normalise non-negative ``weights`` over visible keys; empty rows become zeros."""
    weights = torch.where(visible, weights, torch.zeros_like(weights))
    total = weights.sum(dim=-1, keepdim=True)
    return torch.where(
        total > 0, weights / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(weights)
    )


def softmax_rows(logits: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Softmax over visible keys given logits; empty rows become zeros."""
    logits = logits.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.where(visible.any(dim=-1, keepdim=True), probs, torch.zeros_like(probs))


def moment_matched_scales(q, k, mask=None, *, scale=None, stats="per_sequence"):
    """LLN's ``alpha, beta: (batch, heads, 1, 1)``, stated plainly: with the unbiased standard deviations
    ``s_q, s_k`` of q and k (per sequence and head over real tokens and all channels, or over the whole tensor
    for ``stats="global"``), ``s~^2 = max(0, (s_q^2 s_k^2 d scale^2 - b) / (2a))``, ``alpha = s~/s_q``,
    ``beta = s~/s_k``; no gradient flows through them."""
    head_dim = q.shape[-1]
    scale = head_dim**-0.5 if scale is None else scale

    def std(x):
        x = x.detach()
        if stats == "global":
            return x.std().expand(x.shape[0], x.shape[1])
        rows = [
            [x[b, h][mask[b]] if mask is not None else x[b, h] for h in range(x.shape[1])]
            for b in range(x.shape[0])
        ]
        return torch.stack(
            [
                torch.stack(
                    [
                        r.std() if r.numel() > 1 else torch.zeros((), dtype=x.dtype, device=x.device)
                        for r in row
                    ]
                )
                for row in rows
            ]
        ).to(x.device)

    a, b = moment_constants(head_dim)
    s_q, s_k = std(q).clamp_min(MIN_STD), std(k).clamp_min(MIN_STD)
    matched = (((s_q * s_k) ** 2 * head_dim * scale**2 - b) / (2 * a)).clamp_min(0).sqrt()
    return (matched / s_q)[..., None, None], (matched / s_k)[..., None, None]


def lln_matrix(q, k, mask=None, *, causal=False, scale=None, stats="per_sequence") -> torch.Tensor:
    """LLN attention probabilities ``(batch, heads, seq, seq)``:
    ``P_ij = softmax_j(logsumexp_c(alpha q_ic + beta k_jc))``, i.e. ``A_ij = Σ_c exp(alpha q_ic) exp(beta k_jc)``
    normalised over the visible keys."""
    alpha, beta = moment_matched_scales(q, k, mask, scale=scale, stats=stats)
    logits = torch.logsumexp((alpha * q).unsqueeze(3) + (beta * k).unsqueeze(2), dim=-1)
    return softmax_rows(logits, visible_keys(mask, q.shape[0], q.shape[2], causal, q.device))


def dense_lln(q, k, v, mask=None, *, causal=False, scale=None, eps=1e-6, stats="per_sequence", chunk_size=64):
    return lln_matrix(q, k, mask, causal=causal, scale=scale, stats=stats) @ v


def block_diag_matrix(
    q, k, mask=None, *, block_size=None, causal=False, scale=None, queries=None
) -> torch.Tensor:
    """Softmax of ``scale·q_i·k_j`` over visible keys in the same block (``i // block_size == j // block_size``).
    ``queries: (count,)`` long: compute only these query positions' rows, ``(batch, heads, count, seq)``."""
    seq, head_dim = q.shape[2], q.shape[3]
    block = head_dim if block_size is None else block_size
    scale = head_dim**-0.5 if scale is None else scale
    index = torch.arange(seq, device=q.device)
    rows = index if queries is None else queries
    same_block = (rows[:, None] // block) == (index[None, :] // block)
    visible = visible_keys(mask, q.shape[0], seq, causal, q.device)[:, :, rows] & same_block
    q_rows = q if queries is None else q[:, :, queries]
    return softmax_rows(scale * q_rows @ k.transpose(-1, -2), visible)


def dense_block_diag(q, k, v, mask=None, *, block_size=None, causal=False, scale=None, dropout_p=0.0):
    return block_diag_matrix(q, k, mask, block_size=block_size, causal=causal, scale=scale) @ v


def lln_diag_matrix(q, k, mask=None, *, block_size=None, causal=False, scale=None, stats="per_sequence"):
    """LLN+Diag's ``average`` mix ``(P_lln + P_block_diag) / 2``: the mean of two row-stochastic matrices (the
    learnable mixes weigh each output channel, so they have no single matrix)."""
    lln = lln_matrix(q, k, mask, causal=causal, scale=scale, stats=stats)
    return (lln + block_diag_matrix(q, k, mask, block_size=block_size, causal=causal, scale=scale)) / 2


def dense_lln_diag(
    q,
    k,
    v,
    mask=None,
    *,
    mix="average",
    lln_weight=None,
    diag_weight=None,
    block_size=None,
    causal=False,
    scale=None,
    eps=1e-6,
    stats="per_sequence",
    dropout_p=0.0,
    chunk_size=64,
):
    """``average``: ``(LLN + Diag) / 2``; ``learnable_scale``: ``r LLN + p Diag``; ``learnable_ratio``:
    ``r LLN + (1 - r) Diag``, with ``r = lln_weight``, ``p = diag_weight``: ``(heads, v_dim)``."""
    lln_out = dense_lln(q, k, v, mask, causal=causal, scale=scale, stats=stats)
    diag_out = dense_block_diag(q, k, v, mask, block_size=block_size, causal=causal, scale=scale)
    if mix == "average":
        return (lln_out + diag_out) / 2
    r = lln_weight[:, None, :].to(lln_out.dtype)
    p = diag_weight[:, None, :].to(lln_out.dtype) if mix == "learnable_scale" else 1 - r
    return r * lln_out + p * diag_out


def cheap_linear_matrix(q, k, mask=None, *, causal=False, scale=None) -> torch.Tensor:
    """``W_ij = scale·q_i·k_j / n_i`` over the n_i visible keys (signed, not a distribution)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    visible = visible_keys(mask, q.shape[0], q.shape[2], causal, q.device)
    counts = visible.sum(dim=-1, keepdim=True).clamp_min(1).to(q.dtype)
    return (
        torch.where(visible, scale * q @ k.transpose(-1, -2), torch.zeros((), dtype=q.dtype, device=q.device))
        / counts
    )


def dense_cheap_linear(q, k, v, mask=None, *, causal=False, scale=None, chunk_size=64):
    return cheap_linear_matrix(q, k, mask, causal=causal, scale=scale) @ v


def linear_elu_matrix(q, k, mask=None, *, causal=False) -> torch.Tensor:
    weights = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)
    return normalise_rows(weights, visible_keys(mask, q.shape[0], q.shape[2], causal, q.device))


def dense_linear_elu(q, k, v, mask=None, *, causal=False, eps=1e-6, chunk_size=64):
    return linear_elu_matrix(q, k, mask, causal=causal) @ v


def performer_matrix(q, k, mask=None, *, projection, causal=False, scale=None) -> torch.Tensor:
    """``A_ij = phi(q_i)·phi(k_j)`` normalised over visible keys, ``phi(x) = exp(W x' - |x'|²/2) / sqrt(m)``,
    ``x' = scale^(1/2) x``; summed in log space (``logsumexp`` over features) so that large inputs cannot
    underflow even float64."""
    root = (q.shape[-1] ** -0.5 if scale is None else scale) ** 0.5
    w = projection.to(dtype=q.dtype, device=q.device)

    def log_phi(x):
        x = x * root
        return x @ w.T - 0.5 * x.pow(2).sum(dim=-1, keepdim=True) - 0.5 * math.log(w.shape[0])

    logits = torch.logsumexp(log_phi(q).unsqueeze(3) + log_phi(k).unsqueeze(2), dim=-1)
    return softmax_rows(logits, visible_keys(mask, q.shape[0], q.shape[2], causal, q.device))


def dense_performer(q, k, v, mask=None, *, projection, causal=False, scale=None, eps=1e-6, chunk_size=64):
    return performer_matrix(q, k, mask, projection=projection, causal=causal, scale=scale) @ v


def cosformer_matrix(q, k, mask=None, *, causal=False) -> torch.Tensor:
    """``A_ij = relu(q_i)·relu(k_j) · cos(π (pos_i - pos_j) / 2M)``, positions and M counted over real tokens."""
    batch, _, seq, _ = q.shape
    if mask is None:
        positions = torch.arange(seq, device=q.device, dtype=q.dtype).expand(batch, seq)
        length = torch.full((batch,), float(seq), device=q.device, dtype=q.dtype)
    else:
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0).to(q.dtype)
        length = mask.sum(dim=1).clamp_min(1).to(q.dtype)
    gap = positions[:, :, None] - positions[:, None, :]
    reweight = torch.cos(math.pi / 2 * gap / length[:, None, None])[:, None]
    weights = (F.relu(q) @ F.relu(k).transpose(-1, -2)) * reweight
    return normalise_rows(weights, visible_keys(mask, batch, seq, causal, q.device))


def dense_cosformer(q, k, v, mask=None, *, causal=False, eps=1e-6, chunk_size=64):
    return cosformer_matrix(q, k, mask, causal=causal) @ v
