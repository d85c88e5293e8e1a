"""Moment matching for LLN attention: choose ``alpha, beta`` so that LLN is as concentrated as softmax.

Concentration is measured by the variance, over the keys ``j`` of a query row ``i``, of the log attention
``log A_ij`` (the row normaliser cancels). For Gaussian ``q, k`` with element standard deviations
``s_q, s_k`` and softmax temperature ``scale``, softmax has ``s_sm^2 = s_q^2 s_k^2 head_dim scale^2``.
LLN, ``A_ij ∝ sum_c exp(alpha q_ic + beta k_jc)``, is modelled as ``2 a s~^2 + b`` where
``alpha s_q = beta s_k = s~``; equating the two gives ``s~^2 = (s_sm^2 - b) / (2 a)``. The constants
``(a, b)`` depend on the head size; ``MOMENT_CONSTANTS`` holds them, fitted by simulation with
``hf_lln.experiments.fit_moment_constants`` (method and measured matching errors in docs/moment_matching.md).
"""

from __future__ import annotations

import bisect
import math
import operator

import torch

STATS_MODES = ("per_sequence", "global")

PAPER_CONSTANTS: dict[int, tuple[float, float]] = {64: (0.14855178144710912, -0.35487039130661086)}

# Written by `python -m hf_lln.experiments.fit_moment_constants --write`; 64 keeps the paper's constants.
MOMENT_CONSTANTS: dict[int, tuple[float, float]] = {
    4: (0.29215, -0.20701),
    8: (0.24155, -0.30779),
    12: (0.21945, -0.36342),
    16: (0.20363, -0.40132),
    24: (0.1892, -0.45347),
    32: (0.17649, -0.48533),
    40: (0.16893, -0.51078),
    48: (0.16342, -0.53064),
    56: (0.15843, -0.5449),
    64: (0.14855178144710912, -0.35487039130661086),
    72: (0.153, -0.57408),
    80: (0.15004, -0.58203),
    96: (0.14726, -0.60593),
    100: (0.14603, -0.60847),
    112: (0.14247, -0.61662),
    128: (0.1408, -0.63407),
    144: (0.13737, -0.64104),
    160: (0.13507, -0.65162),
    192: (0.13153, -0.66882),
    224: (0.12756, -0.67966),
    256: (0.1258, -0.69176),
}

# Floor for standard deviations: an all-padding sequence (std 0) still gives finite alpha and beta.
MIN_STD = 1e-6


def moment_constants(head_dim: int) -> tuple[float, float]:
    """The moment-matching constants ``(a, b)`` of LLN attention for ``head_dim``.

    Head sizes in ``MOMENT_CONSTANTS`` get their table value; sizes between two table entries get
    ``a`` and ``b`` interpolated linearly in ``log(head_dim)`` (both vary smoothly in it). Sizes outside
    the table's range raise ``ValueError``.
    """
    try:
        head_dim = operator.index(head_dim)
    except TypeError:
        raise TypeError(f"head_dim must be an int, got {type(head_dim).__name__}") from None
    sizes = sorted(MOMENT_CONSTANTS)
    if not sizes[0] <= head_dim <= sizes[-1]:
        raise ValueError(
            f"head_dim must be between {sizes[0]} and {sizes[-1]} (the head sizes fitted in "
            f"MOMENT_CONSTANTS; extend the table with hf_lln.experiments.fit_moment_constants), got {head_dim}"
        )
    if head_dim in MOMENT_CONSTANTS:
        return MOMENT_CONSTANTS[head_dim]
    above = bisect.bisect(sizes, head_dim)
    lower, upper = sizes[above - 1], sizes[above]
    t = (math.log(head_dim) - math.log(lower)) / (math.log(upper) - math.log(lower))
    (a_lo, b_lo), (a_hi, b_hi) = MOMENT_CONSTANTS[lower], MOMENT_CONSTANTS[upper]
    return (a_lo + t * (a_hi - a_lo), b_lo + t * (b_hi - b_lo))


def _check_stats(stats: str) -> None:
    if stats not in STATS_MODES:
        raise ValueError(f"stats must be one of {STATS_MODES}, got {stats!r}")


@torch.no_grad()
def token_std(x: torch.Tensor, mask: torch.Tensor | None = None, stats: str = "per_sequence") -> torch.Tensor:
    """Sample standard deviation (unbiased, as ``torch.std``) of ``x`` per sequence and head.

    x: (batch, heads, seq, head_dim); mask: (batch, seq) bool, True = real token, or None.
    Returns (batch, heads) in float32 (float64 for float64 ``x``), without gradient.
    ``"per_sequence"``: over the real tokens and all channels of each (batch, head), so a sequence's value
    depends neither on padding nor on its batch mates; a sequence with fewer than two real elements
    gives 0. ``"global"``: one value over the whole tensor, mask ignored (as the paper's reference code
    does), expanded to (batch, heads).
    """
    _check_stats(stats)
    batch, heads = x.shape[:2]
    x = x.detach().to(torch.promote_types(x.dtype, torch.float32))
    if stats == "global":
        return x.std().expand(batch, heads).clone()
    if mask is None:
        return x.std(dim=(2, 3))
    weight = mask[:, None, :, None].to(x.dtype)
    count = weight.sum(dim=(2, 3)) * x.shape[-1]
    mean = (x * weight).sum(dim=(2, 3)) / count.clamp_min(1)
    squares = ((x - mean[:, :, None, None]) ** 2 * weight).sum(dim=(2, 3))
    return (squares / (count - 1).clamp_min(1)).sqrt()


def query_key_std(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, stats: str = "per_sequence"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard deviations ``(q_std, k_std)`` of queries and keys, each (batch, heads), as ``token_std``.

    q, k: (batch, heads, seq, head_dim); mask: (batch, seq) bool, True = real token, or None.
    """
    _check_stats(stats)
    return token_std(q, mask, stats), token_std(k, mask, stats)


@torch.no_grad()
def lln_feature_scales(
    q_std: torch.Tensor, k_std: torch.Tensor, head_dim: int, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLN feature-map scales ``(alpha, beta)`` that match softmax's variance of log attention.

    q_std, k_std: (batch, heads) standard deviations of queries and keys (see ``query_key_std``).
    ``scale`` (default ``head_dim ** -0.5``) is the softmax temperature being matched.
    Returns alpha, beta with the shape and dtype of the stds, without gradient:
    ``s~^2 = max(0, (s_q^2 s_k^2 head_dim scale^2 - b) / (2 a))``, ``alpha = s~ / s_q``,
    ``beta = s~ / s_k``, with ``(a, b) = moment_constants(head_dim)`` and the stds floored at
    ``MIN_STD`` so alpha and beta stay finite.
    """
    if not torch.jit.is_tracing() and q_std.shape != k_std.shape:
        raise ValueError(
            f"q_std and k_std must have the same shape (batch, heads), got {tuple(q_std.shape)} "
            f"and {tuple(k_std.shape)}"
        )
    if scale is not None and not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    a, b = moment_constants(head_dim)
    if scale is None:
        scale = head_dim**-0.5
    q_std = q_std.clamp_min(MIN_STD)
    k_std = k_std.clamp_min(MIN_STD)
    softmax_variance = (q_std * k_std) ** 2 * (head_dim * scale**2)
    matched_std = ((softmax_variance - b) / (2 * a)).clamp_min(0).sqrt()
    return matched_std / q_std, matched_std / k_std
