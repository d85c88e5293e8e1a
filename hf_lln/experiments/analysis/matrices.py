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

from hf_lln.models.configuration_lln import LLN_SETTINGS_DEFAULTS
from hf_lln.ops.reference import block_diag_matrix
from hf_lln.variants import ATTENTION_VARIANTS, SOFTMAX_IMPLEMENTATIONS, VARIANTS, check_attn_implementation

# What the analysis can draw: softmax (every Transformers implementation), the registered variants, and the
# block-diagonal softmax that LLN+Diag mixes in.
FORMULAS = ("softmax", *ATTENTION_VARIANTS, "block_diag")


def variant_of(attn_implementation: str) -> str:
    """The formula an ``attn_implementation`` name computes: softmax for the Transformers built-ins."""
    if attn_implementation in SOFTMAX_IMPLEMENTATIONS:
        return "softmax"
    if attn_implementation not in FORMULAS:
        check_attn_implementation(attn_implementation)
    return attn_implementation


def is_row_stochastic(variant: str) -> bool:
    """Whether ``variant``'s matrix is a distribution over keys per query (all but cheap linear)."""
    name = variant_of(variant)
    return name not in VARIANTS or VARIANTS[name].row_stochastic


def attention_matrix(
    variant: str, q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None, **options
):
    """The ``(batch, heads, seq, seq)`` float64 attention matrix of ``variant`` for unpadded, non-causal inputs.

    ``q, k: (batch, heads, seq, head_dim)``; ``variant`` a registered variant, ``"block_diag"`` or a softmax
    ``attn_implementation``. ``scale`` defaults to ``head_dim**-0.5``; ``options`` are the variant's keyword
    arguments (``block_size``, ``stats``, ``projection``: see :func:`hf_lln.experiments.analysis.capture.
    matrix_settings`), of which each formula takes the ones it names; unnamed ones take the default config's.
    """
    variant = variant_of(variant)
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(
            f"q and k must both have shape (batch, heads, seq, head_dim), got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    q, k = q.detach().to(torch.float64), k.detach().to(torch.float64)
    if variant == "softmax":
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        return torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1)
    if variant == "block_diag":
        return block_diag_matrix(q, k, block_size=options.get("block_size"), scale=scale)
    row = VARIANTS[variant]
    # Unnamed options take the values a model with the default config runs with (layer 0's projection).
    defaults = row.options(LLN_SETTINGS_DEFAULTS, q.shape[-1], 0)
    options = {**defaults, **{key: value for key, value in options.items() if value is not None}}
    scale_option = {"scale": scale} if row.takes_scale else {}
    return row.matrix(q, k, **scale_option, **row.matrix_options(options))
