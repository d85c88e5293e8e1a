"""Attention operators: every variant as a plain dense reference and as a fast path.

All operators take ``q, k, v: (batch, heads, seq, head_dim)`` (``v`` may have its own last size)
and an optional key padding mask ``mask: (batch, seq)`` of dtype bool, True for a real token.
They return ``(batch, heads, seq, v_dim)`` in the dtype of ``v``; half-precision inputs are computed
in float32 inside.

Layout: ``reference.py`` states each formula plainly in O(seq²) (usable in float64); the other
modules hold the fast paths (O(seq) memory); ``triton/`` holds fused GPU kernels, used when
available and never required.
"""

from hf_lln.ops.baselines import (
    cosformer_attention,
    linear_elu_attention,
    performer_attention,
    performer_projection,
)
from hf_lln.ops.block_diag import block_diag_attention
from hf_lln.ops.cheap_linear import cheap_linear_attention, cheap_linear_encode, cheap_linear_lookup
from hf_lln.ops.lln import lln_attention, lln_encode, lln_lookup
from hf_lln.ops.lln_diag import MIX_MODES, lln_diag_attention
from hf_lln.ops.moments import STATS_MODES, lln_feature_scales, moment_constants

__all__ = [
    "MIX_MODES",
    "STATS_MODES",
    "block_diag_attention",
    "cheap_linear_attention",
    "cheap_linear_encode",
    "cheap_linear_lookup",
    "cosformer_attention",
    "linear_elu_attention",
    "lln_attention",
    "lln_diag_attention",
    "lln_encode",
    "lln_feature_scales",
    "lln_lookup",
    "moment_constants",
    "performer_attention",
    "performer_projection",
]
