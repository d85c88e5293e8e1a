"""Transformers glue: the attention variants registered with ``AttentionInterface`` and ``AttentionMaskInterface``."""

from hf_lln.integration.attention import (
    ATTENTION_FUNCTIONS,
    ATTENTION_VARIANTS,
    LLN_CONFIG_DEFAULTS,
    check_lln_settings,
    key_padding_mask,
    register_attention_variants,
)

__all__ = [
    "ATTENTION_FUNCTIONS",
    "ATTENTION_VARIANTS",
    "LLN_CONFIG_DEFAULTS",
    "check_lln_settings",
    "key_padding_mask",
    "register_attention_variants",
]
