"""The attention variants as Transformers attention implementations, and the mask function they need.

Transformers calls an attention implementation as
``fn(module, query, key, value, attention_mask, scaling=..., dropout=..., **kwargs)`` with
``query, key, value: (batch, heads, seq, head_dim)`` and expects ``(output: (batch, seq, heads, head_dim),
weights)`` back. The ``attention_mask`` it passes is whatever the function registered under the same name with
``AttentionMaskInterface`` built; for a name without one Transformers passes ``None`` and padding is silently
lost. Ours, ``key_padding_mask``, hands on the ``(batch, seq)`` bool key padding mask (True = real token)
unchanged; whether to run the causal path comes from the module (``module.is_causal``, True in BERT/RoBERTa
layers built with ``is_decoder=True``).

The knobs of each variant are read from the model config's ``lln_*`` fields (declared by ``LLNBertConfig`` and
``LLNRobertaConfig``); a stock config without them gets ``LLN_CONFIG_DEFAULTS``. The learnable LLN+Diag mix
weights live on the attention module as ``module.lln_mix`` (added by the LLN model classes), so stock models
support ``lln_mix_mode="average"`` only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from transformers import AttentionInterface, AttentionMaskInterface

from hf_lln.ops.baselines import (
    cosformer_attention,
    linear_elu_attention,
    performer_attention,
    performer_projection,
)
from hf_lln.ops.cheap_linear import cheap_linear_attention
from hf_lln.ops.lln import lln_attention
from hf_lln.ops.lln_diag import MIX_MODES, lln_diag_attention
from hf_lln.ops.moments import STATS_MODES

ATTENTION_VARIANTS = ("lln", "lln_diag", "cheap_linear", "linear_elu", "performer", "cosformer")

LLN_CONFIG_DEFAULTS = {
    "lln_variant": "lln_diag",
    "lln_block_size": None,
    "lln_mix_mode": "average",
    "lln_eps": 1e-6,
    "lln_stats": "per_sequence",
    "lln_performer_features": 256,
    "lln_performer_seed": 0,
}


def check_lln_settings(
    *,
    lln_variant: str,
    lln_block_size: int | None,
    lln_mix_mode: str,
    lln_eps: float,
    lln_stats: str,
    lln_performer_features: int,
    lln_performer_seed: int,
) -> None:
    """Raise ``ValueError`` naming the first invalid ``lln_*`` setting and the values it accepts."""
    choices = {"lln_variant": (lln_variant, ATTENTION_VARIANTS), "lln_mix_mode": (lln_mix_mode, MIX_MODES)}
    choices["lln_stats"] = (lln_stats, STATS_MODES)
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    for name, value, optional in (
        ("lln_block_size", lln_block_size, True),
        ("lln_performer_features", lln_performer_features, False),
    ):
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1{' or None' if optional else ''}; got {value!r}")
    if isinstance(lln_eps, bool) or not isinstance(lln_eps, (int, float)) or not lln_eps > 0:
        raise ValueError(f"lln_eps must be a number > 0; got {lln_eps!r}")
    if (
        isinstance(lln_performer_seed, bool)
        or not isinstance(lln_performer_seed, int)
        or lln_performer_seed < 0
    ):
        raise ValueError(f"lln_performer_seed must be an integer >= 0; got {lln_performer_seed!r}")


def key_padding_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """``AttentionMaskInterface`` function of every variant: the key padding mask ``(batch, kv_length)`` bool
    (True = real token) that Transformers prepared from the user's 2-D ``attention_mask``, or None."""
    if attention_mask is None:
        return None
    return attention_mask[:, kv_offset : kv_offset + kv_length]


def _setting(module: torch.nn.Module, name: str):
    return getattr(getattr(module, "config", None), name, LLN_CONFIG_DEFAULTS[name])


def _mix_weights(module: torch.nn.Module) -> tuple[str, torch.Tensor | None, torch.Tensor | None]:
    mix = _setting(module, "lln_mix_mode")
    if mix == "average":
        return mix, None, None
    weights = getattr(module, "lln_mix", None)
    if weights is None:
        raise ValueError(
            f"lln_mix_mode={mix!r} needs the learnable mix weights that the LLNBert*/LLNRoberta* model classes add "
            "to every attention layer; this model has none (a stock class?): use those classes or "
            "lln_mix_mode='average'"
        )
    return mix, weights.lln_weight, weights.diag_weight


# Built eagerly and cached, also under torch.compile: the projection is a constant of the layer, not traced work.
@torch.compiler.disable
@functools.lru_cache(maxsize=256)
def _performer_projection(num_features: int, head_dim: int, seed: int, device: torch.device) -> torch.Tensor:
    return performer_projection(num_features, head_dim, seed=seed, device=device)


def _lln(module, q, k, v, mask, causal, scale, dropout_p):
    eps, stats = _setting(module, "lln_eps"), _setting(module, "lln_stats")
    return lln_attention(q, k, v, mask, causal=causal, scale=scale, eps=eps, stats=stats)


def _lln_diag(module, q, k, v, mask, causal, scale, dropout_p):
    mix, lln_weight, diag_weight = _mix_weights(module)
    return lln_diag_attention(
        q,
        k,
        v,
        mask,
        mix=mix,
        lln_weight=lln_weight,
        diag_weight=diag_weight,
        block_size=_setting(module, "lln_block_size"),
        causal=causal,
        scale=scale,
        eps=_setting(module, "lln_eps"),
        stats=_setting(module, "lln_stats"),
        dropout_p=dropout_p,
    )


def _cheap_linear(module, q, k, v, mask, causal, scale, dropout_p):
    return cheap_linear_attention(q, k, v, mask, causal=causal, scale=scale)


def _linear_elu(module, q, k, v, mask, causal, scale, dropout_p):
    return linear_elu_attention(q, k, v, mask, causal=causal, eps=_setting(module, "lln_eps"))


def _performer(module, q, k, v, mask, causal, scale, dropout_p):
    # One fixed projection per layer: the seed is offset by the layer index so layers do not share features.
    seed = _setting(module, "lln_performer_seed") + (getattr(module, "layer_idx", None) or 0)
    projection = _performer_projection(
        _setting(module, "lln_performer_features"), q.shape[-1], seed, q.device
    )
    return performer_attention(
        q, k, v, mask, projection=projection, causal=causal, scale=scale, eps=_setting(module, "lln_eps")
    )


def _cosformer(module, q, k, v, mask, causal, scale, dropout_p):
    return cosformer_attention(q, k, v, mask, causal=causal, eps=_setting(module, "lln_eps"))


def _attention_forward(name: str, op: Callable) -> Callable:
    def attention_forward(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        """``query, key, value: (batch, heads, seq, head_dim)``, ``attention_mask: (batch, seq)`` bool or None
        -> ``((batch, seq, heads, head_dim), None)``."""
        batch, _, seq, _ = query.shape
        if key.shape[2] != seq:
            raise ValueError(
                f"attn_implementation={name!r} needs queries and keys from one sequence (self-attention without a "
                f"key/value cache); got {seq} queries and {key.shape[2]} keys. Cross-attention and cached decoding "
                "are not supported: pass use_cache=False"
            )
        if attention_mask is not None and (
            attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, seq)
        ):
            raise ValueError(
                f"attention_mask for attn_implementation={name!r} must be a key padding mask of shape (batch, seq) = "
                f"({batch}, {seq}), True = real token, as hf_lln's registered mask function gives; got shape "
                f"{tuple(attention_mask.shape)}. Pass the usual 2-D attention_mask to the model: arbitrary 4-D "
                "masks have no linear-attention form"
            )
        causal = kwargs.get("is_causal")
        if causal is None:
            causal = getattr(module, "is_causal", False)
        dropout_p = dropout if module.training else 0.0
        out = op(module, query, key, value, attention_mask, bool(causal), scaling, dropout_p)
        return out.transpose(1, 2).contiguous(), None

    attention_forward.__name__ = attention_forward.__qualname__ = f"{name}_attention_forward"
    return attention_forward


_VARIANT_OPS = {
    "lln": _lln,
    "lln_diag": _lln_diag,
    "cheap_linear": _cheap_linear,
    "linear_elu": _linear_elu,
    "performer": _performer,
    "cosformer": _cosformer,
}
ATTENTION_FUNCTIONS: dict[str, Callable] = {
    name: _attention_forward(name, _VARIANT_OPS[name]) for name in ATTENTION_VARIANTS
}


def register_attention_variants() -> None:
    """Register every variant with ``AttentionInterface`` and ``key_padding_mask`` as its mask function with
    ``AttentionMaskInterface`` (idempotent)."""
    for name, function in ATTENTION_FUNCTIONS.items():
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, key_padding_mask)
