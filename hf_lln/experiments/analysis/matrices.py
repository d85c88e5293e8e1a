"""Each implementation's attention matrix, materialised for analysis (short sequences only: O(seq²)).

The formulas live once, in ``hf_lln.ops.reference`` (``*_matrix``); this module names them by the
``attn_implementation`` a model runs with and adds the two the references leave implicit:

- softmax (``eager``, ``sdpa``, ``flash_attention_*``): ``P = softmax_j(scale q_i·k_j)``;
- ``lln_diag`` (``mix="average"``): ``P = 0.5 P_lln + 0.5 P_block_diag``, the mean of two row-stochastic
  matrices, so itself row-stochastic.

``lln``: ``P_ij = softmax_j(logsumexp_c(alpha q_ic + beta k_jc))`` with moment-matched alpha, beta;
``linear_elu``, ``performer``, ``cosformer``: normalised products of non-negative features.
``cheap_linear`` gives ``W_ij = scale q_i·k_j / n``: signed and with rows that do not sum to one, so
it is not a distribution. The distribution and concentration instruments are undefined for it; the
analysis reports its sign and row-sum statistics instead (:func:`is_row_stochastic`).

Every matrix is computed in float64 and ``matrix @ v`` equals the variant's fast op output on the
same inputs (tested in ``tests/experiments/analysis/test_matrices.py``).
"""

from __future__ import annotations

import torch

from hf_lln.ops import performer_projection, reference

SOFTMAX_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
VARIANTS = (
    "softmax",
    "lln",
    "lln_diag",
    "block_diag",
    "cheap_linear",
    "linear_elu",
    "performer",
    "cosformer",
)
PERFORMER_FEATURES = 256


def variant_of(attn_implementation: str) -> str:
    """The formula an ``attn_implementation`` name computes: softmax for the Transformers built-ins."""
    if attn_implementation in SOFTMAX_IMPLEMENTATIONS:
        return "softmax"
    if attn_implementation not in VARIANTS:
        raise ValueError(
            f"attn_implementation must be one of {SOFTMAX_IMPLEMENTATIONS + VARIANTS[1:]}, got {attn_implementation!r}"
        )
    return attn_implementation


def is_row_stochastic(variant: str) -> bool:
    """Whether ``variant``'s matrix is a distribution over keys per query (all but cheap linear)."""
    return variant_of(variant) != "cheap_linear"


def attention_matrix(
    variant: str,
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: float | None = None,
    block_size: int | None = None,
    projection: torch.Tensor | None = None,
    stats: str = "per_sequence",
) -> torch.Tensor:
    """The ``(batch, heads, seq, seq)`` float64 attention matrix of ``variant`` for unpadded, non-causal inputs.

    ``q, k: (batch, heads, seq, head_dim)``; ``variant`` a name of :data:`VARIANTS` or a softmax
    ``attn_implementation``. ``scale`` defaults to ``head_dim**-0.5``; ``block_size`` (block-diagonal part,
    default head_dim) and ``stats`` (LLN moment statistics) as in ``hf_lln.ops``; ``projection``
    ``(features, head_dim)`` for performer, default ``performer_projection(256, head_dim, seed=0)``.
    """
    variant = variant_of(variant)
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(
            f"q and k must both have shape (batch, heads, seq, head_dim), got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    q, k = q.detach().to(torch.float64), k.detach().to(torch.float64)
    head_dim = q.shape[-1]
    if variant == "softmax":
        scale = head_dim**-0.5 if scale is None else scale
        return torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1)
    if variant == "lln":
        return reference.lln_matrix(q, k, scale=scale, stats=stats)
    if variant == "block_diag":
        return reference.block_diag_matrix(q, k, block_size=block_size, scale=scale)
    if variant == "lln_diag":
        lln = reference.lln_matrix(q, k, scale=scale, stats=stats)
        return 0.5 * (lln + reference.block_diag_matrix(q, k, block_size=block_size, scale=scale))
    if variant == "cheap_linear":
        return reference.cheap_linear_matrix(q, k, scale=scale)
    if variant == "linear_elu":
        return reference.linear_elu_matrix(q, k)
    if variant == "performer":
        if projection is None:
            projection = performer_projection(PERFORMER_FEATURES, head_dim, seed=0)
        return reference.performer_matrix(q, k, projection=projection, scale=scale)
    return reference.cosformer_matrix(q, k)
