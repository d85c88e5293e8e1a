"""Dense O(seq²) references: each variant's formula stated plainly, usable in float64.

Every function builds the full ``(batch, heads, seq, seq)`` attention matrix, so it is for tests and analysis on
short sequences only. ``visible[b, i, j]`` is True where query i may use key j (a real key, and j <= i when
causal); rows with no visible key give zeros. Nothing here is shared with the fast paths except the
moment-matching scales of LLN, which are the definition of alpha and beta.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hf_lln.ops.lln import lln_scales
from hf_lln.ops.lln_diag import mix_outputs


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


def lln_matrix(q, k, mask=None, *, causal=False, scale=None, stats="per_sequence") -> torch.Tensor:
    """LLN attention probabilities ``(batch, heads, seq, seq)``:
    ``P_ij = softmax_j(logsumexp_c(alpha q_ic + beta k_jc))``, i.e. ``A_ij = Σ_c exp(alpha q_ic) exp(beta k_jc)``
    normalised over the visible keys."""
    alpha, beta = lln_scales(q, k, mask, scale=scale, stats=stats)
    logits = torch.logsumexp((alpha * q).unsqueeze(3) + (beta * k).unsqueeze(2), dim=-1)
    return softmax_rows(logits, visible_keys(mask, q.shape[0], q.shape[2], causal, q.device))


def dense_lln(q, k, v, mask=None, *, causal=False, scale=None, eps=1e-6, stats="per_sequence", chunk_size=64):
    return lln_matrix(q, k, mask, causal=causal, scale=scale, stats=stats) @ v


def block_diag_matrix(q, k, mask=None, *, block_size=None, causal=False, scale=None) -> torch.Tensor:
    """Softmax of ``scale·q_i·k_j`` over visible keys in the same block (``i // block_size == j // block_size``)."""
    seq, head_dim = q.shape[2], q.shape[3]
    block = head_dim if block_size is None else block_size
    scale = head_dim**-0.5 if scale is None else scale
    index = torch.arange(seq, device=q.device)
    same_block = (index[:, None] // block) == (index[None, :] // block)
    visible = visible_keys(mask, q.shape[0], seq, causal, q.device) & same_block
    return softmax_rows(scale * q @ k.transpose(-1, -2), visible)


def dense_block_diag(q, k, v, mask=None, *, block_size=None, causal=False, scale=None, dropout_p=0.0):
    return block_diag_matrix(q, k, mask, block_size=block_size, causal=causal, scale=scale) @ v


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
    lln_out = dense_lln(q, k, v, mask, causal=causal, scale=scale, stats=stats)
    diag_out = dense_block_diag(q, k, v, mask, block_size=block_size, causal=causal, scale=scale)
    return mix_outputs(lln_out, diag_out, mix, lln_weight, diag_weight)


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
