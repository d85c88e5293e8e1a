"""Capture each layer's queries, keys, values and attention output from a BERT-family Transformers model.

Forward hooks on every self-attention module's ``query``, ``key`` and ``value`` projections record what the
attention function receives (BERT and RoBERTa apply no rotary embedding, so the projections are the
inputs), and a hook on the module itself records what the attention function returned, whatever
``attn_implementation`` the model runs with. :func:`matrix_settings` reads the knobs the registered variants
take from the model config (``lln_*`` fields, through ``hf_lln.variants``), so
``attention_matrix(variant, q, k, **matrix_settings(...)) @ v`` reproduces the captured output.
"""

from __future__ import annotations

import dataclasses

import torch

from hf_lln.models.configuration_lln import lln_settings
from hf_lln.variants import VARIANTS


@dataclasses.dataclass
class LayerCapture:
    """One layer's attention inputs and output, each ``(batch, heads, seq, head_dim)``, and its softmax scale."""

    layer: int
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    output: torch.Tensor
    scaling: float


def self_attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The BERT-style self-attention modules of ``model`` in layer order (``query``/``key``/``value`` linears)."""
    modules = [
        module
        for module in model.modules()
        if all(isinstance(getattr(module, name, None), torch.nn.Linear) for name in ("query", "key", "value"))
        and hasattr(module, "num_attention_heads")
        and hasattr(module, "attention_head_size")
    ]
    if not modules:
        raise ValueError(
            f"model ({type(model).__name__}) has no BERT-style self-attention modules (with query, key and value "
            "projections); the analysis supports BERT/RoBERTa-family encoders"
        )
    return modules


def _heads(projected: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """``(batch, seq, heads * head_dim)`` -> ``(batch, heads, seq, head_dim)``."""
    batch, seq, _ = projected.shape
    return projected.view(batch, seq, module.num_attention_heads, module.attention_head_size).transpose(1, 2)


@torch.no_grad()
def capture_attention(model: torch.nn.Module, input_ids: torch.Tensor) -> list[LayerCapture]:
    """Run ``model`` on unpadded ``input_ids: (batch, seq)`` and return every layer's :class:`LayerCapture`."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}")
    modules = self_attention_modules(model)
    records: list[dict[str, torch.Tensor]] = [{} for _ in modules]
    handles = []
    for record, module in zip(records, modules, strict=True):
        for name in ("query", "key", "value"):

            def keep_projection(_, __, output, record=record, name=name, module=module):
                record[name] = _heads(output.detach().float(), module)

            handles.append(getattr(module, name).register_forward_hook(keep_projection))

        def keep_output(_, __, output, record=record, module=module):
            attended = output[0] if isinstance(output, tuple) else output
            record["output"] = _heads(attended.detach().float(), module)

        handles.append(module.register_forward_hook(keep_output))
    try:
        model.eval()
        model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return [
        LayerCapture(
            layer=index,
            q=record["query"],
            k=record["key"],
            v=record["value"],
            output=record["output"],
            scaling=float(getattr(module, "scaling", module.attention_head_size**-0.5)),
        )
        for index, (record, module) in enumerate(zip(records, modules, strict=True))
    ]


def matrix_settings(model: torch.nn.Module, layer: int) -> dict:
    """Keyword arguments of ``attention_matrix`` matching how the registered variants run ``layer`` of ``model``:
    each variant's options from the config (``hf_lln.variants``), restricted to what its matrix takes (the
    block size and statistics, and the layer's fixed Performer projection)."""
    module = self_attention_modules(model)[layer]
    settings = lln_settings(model.config)
    layer_index = getattr(module, "layer_idx", None) or 0
    merged = {}
    for variant in VARIANTS.values():
        merged.update(
            variant.matrix_options(variant.options(settings, module.attention_head_size, layer_index))
        )
    return merged
