"""Transformers glue: the attention variants registered with ``AttentionInterface`` and ``AttentionMaskInterface``."""

from hf_lln.integration.attention import (
    ATTENTION_FUNCTIONS,
    is_cross_attention,
    key_padding_mask,
    register_attention_variants,
)

__all__ = ["ATTENTION_FUNCTIONS", "is_cross_attention", "key_padding_mask", "register_attention_variants"]
