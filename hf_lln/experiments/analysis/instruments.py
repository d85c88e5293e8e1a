"""The paper's instruments on one attention matrix (Nahshan et al., ICLR 2024).

Every instrument takes a row-stochastic matrix ``p: (..., n_queries, n_keys)`` (non-negative, rows
summing to one; leading dimensions such as ``(batch, heads)`` are kept) and works in float64.

Distribution
    The paper models softmax attention as log-normal: for a query i, ``log p_ij = s_ij - log Z_i``
    with scores ``s_ij`` close to Gaussian over the keys j. :func:`log_attention_variance` is the
    variance of ``log p_ij`` over the keys of each row, the quantity LLN matches by moment matching
    (it acts as an inverse temperature: larger variance, sharper attention).
    :func:`lognormal_fit` measures how far each row's logs are from a Gaussian.

Concentration
    :func:`row_entropy` ``H_i = -sum_j p_ij log p_ij`` (nats): ``log n`` for a uniform row, 0 for a
    one-hot row. Low entropy means concentrated attention, but it does not say *how*:

    * **biased concentration**: every query concentrates on the same few keys. The rows agree, the
      matrix approaches rank one, and its second eigenvalue goes to 0, so the spectral gap
      ``1 - |lambda_2|`` (:func:`spectral_gap`) goes to 1. The column mass ``mean_i p_i`` is then as
      concentrated as each row (:func:`column_mass_entropy` close to the row entropy).
    * **unbiased concentration**: each query concentrates on its own keys. Rows differ, the matrix
      approaches a permutation, ``|lambda_2|`` goes to 1 and the spectral gap to 0, while the column
      mass stays spread (column-mass entropy close to ``log n``).

    The paper shows softmax attention concentrates without bias as its temperature drops, while
    linearised attentions with non-negative features concentrate with bias. :func:`concentration_bias`
    condenses both into one number in [0, 1]: the share of the entropy drop below ``log n`` that
    comes from all queries sharing the same keys.
"""

from __future__ import annotations

import math

import torch

ROW_SUM_TOLERANCE = 1e-4


def check_row_stochastic(p: torch.Tensor, name: str = "p") -> torch.Tensor:
    """Return ``p`` as float64 after checking it holds row-stochastic matrices.

    Raises ``ValueError`` naming ``name`` when ``p`` has fewer than 2 dimensions, has negative
    entries, or has a row whose sum is off one by more than ``ROW_SUM_TOLERANCE``.
    """
    if not isinstance(p, torch.Tensor) or p.dim() < 2:
        raise ValueError(f"{name} must be a tensor of shape (..., n_queries, n_keys), got {type(p).__name__}")
    p = p.detach().to(torch.float64)
    if p.shape[-1] == 0 or p.shape[-2] == 0:
        raise ValueError(f"{name} must have at least one query and one key, got shape {tuple(p.shape)}")
    if (p < 0).any():
        raise ValueError(f"{name} must be non-negative (a row-stochastic attention matrix)")
    worst = (p.sum(-1) - 1).abs().max().item()
    if worst > ROW_SUM_TOLERANCE:
        raise ValueError(f"{name} rows must sum to 1, worst row is off by {worst:.3g}")
    return p


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of the distributions along the last dimension, with 0 log 0 = 0."""
    return -torch.special.xlogy(p, p).sum(-1)


def row_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of every row, ``H_i = -sum_j p_ij log p_ij``: ``(..., n_queries)``, in nats."""
    return _entropy(check_row_stochastic(p))


def column_mass_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of the column mass ``mean_i p_ij``: ``(...)``, in nats.

    Low when all queries put their weight on the same keys (biased concentration); ``log n_keys``
    when the queries together cover the keys evenly.
    """
    return _entropy(check_row_stochastic(p).mean(-2))


def concentration_bias(p: torch.Tensor) -> torch.Tensor:
    """Share of the concentration that is biased: ``(log n - H(mean_i p_i)) / (log n - mean_i H(p_i))``.

    ``p: (..., n_queries, n_keys)`` -> ``(...)`` in [0, 1] (concavity of entropy gives
    ``H(mean_i p_i) >= mean_i H(p_i)``). 1: every query has the same distribution (rank one, fully
    biased); 0: the queries together cover the keys evenly however concentrated each one is (fully
    unbiased, e.g. a permutation). NaN where the rows are uniform, so there is no concentration
    to attribute.
    """
    p = check_row_stochastic(p)
    log_n = math.log(p.shape[-1])
    drop = log_n - _entropy(p).mean(-1)
    shared = log_n - _entropy(p.mean(-2))
    bias = shared / drop
    return torch.where(drop > 1e-9, bias.clamp(0.0, 1.0), torch.full_like(bias, math.nan))


def spectral_gap(p: torch.Tensor) -> torch.Tensor:
    """Spectral gap ``1 - |lambda_2|`` of the square row-stochastic matrix ``p: (..., n, n)`` -> ``(...)``.

    ``lambda_2`` is the eigenvalue of second-largest modulus (the largest is 1 with the all-ones
    eigenvector). A rank-one matrix (all rows equal) has gap 1; the identity or any permutation
    has gap 0. For ``n = 1`` the gap is 1.
    """
    p = check_row_stochastic(p)
    if p.shape[-1] != p.shape[-2]:
        raise ValueError(f"p must be square (n, n) for a spectral gap, got shape {tuple(p.shape)}")
    if p.shape[-1] == 1:
        return torch.ones(p.shape[:-2], dtype=torch.float64)
    moduli = torch.linalg.eigvals(p).abs().sort(dim=-1, descending=True).values
    return (1.0 - moduli[..., 1]).clamp(0.0, 1.0)


def log_attention_variance(p: torch.Tensor) -> torch.Tensor:
    """Variance of ``log p_ij`` over the keys j of each row, averaged over rows: ``(...)``.

    Entries equal to 0 (masked or outside a block) are left out. Rows with fewer than two positive
    entries are left out of the average.
    """
    p = check_row_stochastic(p)
    positive = p > 0
    logs = torch.where(positive, p.clamp_min(torch.finfo(torch.float64).tiny).log(), 0.0)
    count = positive.sum(-1)
    mean = logs.sum(-1) / count.clamp_min(1)
    variance = (torch.where(positive, logs - mean.unsqueeze(-1), 0.0) ** 2).sum(-1) / (count - 1).clamp_min(1)
    valid = count >= 2
    return torch.where(valid, variance, 0.0).sum(-1) / valid.sum(-1).clamp_min(1)


def standardised_log_attention(p: torch.Tensor) -> torch.Tensor:
    """The positive entries of ``p`` as ``(log p_ij - m_i) / s_i``, flattened to one float64 vector.

    ``m_i`` and ``s_i`` are the mean and standard deviation of the logs of row i. Centring removes
    the row normaliser ``log Z_i``; scaling removes each row's own temperature. Under the per-row
    log-normal model the result is a standard normal sample whatever the rows' sharpness, so
    rows and heads pool into one sample. Rows with fewer than two positive entries or constant
    logs (uniform rows) carry no shape information and are left out.
    """
    p = check_row_stochastic(p)
    positive = p > 0
    logs = torch.where(positive, p.clamp_min(torch.finfo(torch.float64).tiny).log(), 0.0)
    count = positive.sum(-1, keepdim=True)
    mean = logs.sum(-1, keepdim=True) / count.clamp_min(1)
    centred = torch.where(positive, logs - mean, 0.0)
    std = ((centred**2).sum(-1, keepdim=True) / (count - 1).clamp_min(1)).sqrt()
    keep = positive & (count >= 2) & (std > 1e-12)
    return (centred / std.clamp_min(1e-12))[keep]


def lognormal_fit(p: torch.Tensor, max_samples: int = 20_000, seed: int = 0) -> dict[str, float]:
    """How well a log-normal describes each row of ``p``: a Kolmogorov-Smirnov test on standardised logs.

    The per-row standardised logs (:func:`standardised_log_attention`) are compared with a standard
    normal. Returns ``ks_statistic`` (the largest gap between the empirical and normal CDFs, 0 =
    perfect fit; the number to compare across implementations), ``p_value`` (approximate: each
    row's mean and variance come from the same sample, which makes it conservative; with thousands
    of entries any real deviation is significant), ``skewness`` and ``excess_kurtosis`` of the
    standardised logs (0 and 0 for a log-normal), and ``n_samples`` (a random subsample of at most
    ``max_samples`` entries, drawn with ``seed``).
    """
    from scipy import stats

    sample = standardised_log_attention(p)
    if sample.numel() < 8:
        raise ValueError(
            f"p has {sample.numel()} usable entries; a log-normal fit needs at least 8 (non-uniform rows)"
        )
    if sample.numel() > max_samples:
        generator = torch.Generator().manual_seed(seed)
        sample = sample[torch.randperm(sample.numel(), generator=generator)[:max_samples]]
    values = sample.numpy()
    test = stats.kstest(values, "norm")
    return {
        "ks_statistic": float(test.statistic),
        "p_value": float(test.pvalue),
        "skewness": float(stats.skew(values)),
        "excess_kurtosis": float(stats.kurtosis(values)),
        "n_samples": len(values),
    }


def summarize(p: torch.Tensor) -> dict[str, float]:
    """All instruments on one attention matrix ``p: (n, n)``, as plain floats (JSON-ready).

    Keys: ``seq_len``, ``log_variance``, ``ks_statistic`` (log-normal fit; NaN when every row is
    uniform), ``row_entropy`` (mean over rows, nats), ``row_entropy_normalised`` (divided by
    ``log n``), ``column_mass_entropy``, ``spectral_gap``, ``concentration_bias`` (NaN when the rows
    are uniform).
    """
    p = check_row_stochastic(p)
    if p.dim() != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"p must be one square matrix (n, n), got shape {tuple(p.shape)}")
    n = p.shape[-1]
    entropy = float(row_entropy(p).mean())
    usable = standardised_log_attention(p).numel() >= 8
    return {
        "seq_len": n,
        "log_variance": float(log_attention_variance(p)),
        "ks_statistic": lognormal_fit(p)["ks_statistic"] if usable else math.nan,
        "row_entropy": entropy,
        "row_entropy_normalised": entropy / math.log(n) if n > 1 else 0.0,
        "column_mass_entropy": float(column_mass_entropy(p)),
        "spectral_gap": float(spectral_gap(p)),
        "concentration_bias": float(concentration_bias(p)),
    }
