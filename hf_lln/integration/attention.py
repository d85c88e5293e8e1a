"""The attention variants as Transformers attention implementations, and the mask function they need.

Transformers calls an attention implementation as
``fn(module, query, key, value, attention_mask, scaling=..., dropout=..., **kwargs)`` with
``query, key, value: (batch, heads, seq, head_dim)`` and expects ``(output: (batch, seq, heads, head_dim),
weights)`` back. The ``attention_mask`` it passes is whatever the function registered under the same name with
``AttentionMaskInterface`` built; for a name without one Transformers passes ``None`` and padding is silently
lost. Ours, ``key_padding_mask``, hands on the ``(batch, seq)`` bool key padding mask (True = real token)
unchanged; whether to run the causal path comes from the module (``module.is_causal``, True in BERT/RoBERTa
layers built with ``is_decoder=True``).

Each variant's row in ``hf_lln.variants`` says which ``lln_*`` config fields it reads and how they become the
operator's arguments; the fields and their defaults belong to ``hf_lln.models.configuration_lln`` (a stock config
without them gets the defaults). The learnable LLN+Diag mix weights live on the attention module as
``module.lln_mix`` (added by the LLN model classes), so stock models support ``lln_mix_mode="average"`` only.

Self-attention only: a cross-attention module (a decoder's attention over encoder states) is refused, since a
linear attention over another sequence's keys needs statistics of both sequences that these operators do not take.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from transformers import AttentionInterface, AttentionMaskInterface

from hf_lln.models.configuration_lln import lln_settings
from hf_lln.variants import VARIANTS, Variant


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


def is_cross_attention(module: torch.nn.Module) -> bool:
    """Whether ``module`` attends over another sequence (Transformers' ``*CrossAttention`` classes, or a module
    flagged ``is_cross_attention``)."""
    return bool(getattr(module, "is_cross_attention", False)) or "CrossAttention" in type(module).__name__


def _mix_weights(module: torch.nn.Module, mix: str) -> dict:
    if mix == "average":
        return {}
    weights = getattr(module, "lln_mix", None)
    if weights is None:
        raise ValueError(
            f"lln_mix_mode={mix!r} needs the learnable mix weights that the LLNBert*/LLNRoberta* model classes add "
            f"to every self-attention layer; {type(module).__name__} has none: load the model with those classes "
            "(hf_lln.to_lln or AutoModel on an LLN folder) or use lln_mix_mode='average'"
        )
    return {"lln_weight": weights.lln_weight, "diag_weight": weights.diag_weight}


def _check_call(name: str, module, query, key, attention_mask) -> None:
    if is_cross_attention(module):
        raise ValueError(
            f"attn_implementation={name!r} supports self-attention only; {type(module).__name__} is a cross-attention "
            "module (a decoder attending over encoder states). Run the cross-attention layers with a softmax "
            "implementation (e.g. attn_implementation='sdpa') or build the decoder without add_cross_attention"
        )
    batch, _, seq, _ = query.shape
    if key.shape[2] != seq:
        raise ValueError(
            f"attn_implementation={name!r} needs queries and keys from one sequence (self-attention over the whole "
            f"input); got {seq} queries and {key.shape[2]} keys. Cached decoding is not supported: call the model "
            "on the whole sequence"
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


def _attention_forward(variant: Variant) -> Callable:
    name = variant.name

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
        if not torch.jit.is_tracing():
            _check_call(name, module, query, key, attention_mask)
        if kwargs.get("output_attentions") and not torch.compiler.is_compiling():
            warnings.warn(
                f"attn_implementation={name!r} never forms the attention matrix, so output_attentions=True "
                "returns no attention weights; hf_lln.experiments.analysis.attention_matrix rebuilds it for "
                "short inputs",
                stacklevel=2,
            )
        causal = kwargs.get("is_causal")
        if causal is None:
            causal = getattr(module, "is_causal", False)
        settings = lln_settings(getattr(module, "config", None))
        options = variant.options(settings, query.shape[-1], getattr(module, "layer_idx", None) or 0)
        if variant.takes_scale:
            options["scale"] = scaling
        if variant.takes_dropout:
            options["dropout_p"] = dropout if module.training else 0.0
        if "mix" in options:
            options.update(_mix_weights(module, options["mix"]))
        out = variant.op(query, key, value, attention_mask, causal=bool(causal), **options)
        return out.transpose(1, 2).contiguous(), None

    attention_forward.__name__ = attention_forward.__qualname__ = f"{name}_attention_forward"
    return attention_forward


ATTENTION_FUNCTIONS: dict[str, Callable] = {name: _attention_forward(row) for name, row in VARIANTS.items()}


def register_attention_variants() -> None:
    """Register every variant with ``AttentionInterface`` and ``key_padding_mask`` as its mask function with
    ``AttentionMaskInterface`` (idempotent)."""
    for name, function in ATTENTION_FUNCTIONS.items():
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, key_padding_mask)
