"""Which attention parameters transfer trains, and the two that are trained as extra tensors and folded back.

- ``qk``: the query and key projections (weights and biases): they alone shape the attention matrix.
- ``qkvo``: those plus the value and output (``attention.output.dense``) projections.
- ``lora``: a rank-``lora_rank`` update ``W + B A`` of each of q, k, v, o (``B`` starts at zero), merged into
  ``W`` at the end.
- ``temperature``: one learnable scale per head on the queries (``q_h -> exp(t_h) q_h``, ``t_h`` starts at 0),
  multiplied into the query weights and bias at the end. Moment matching ties LLN's sharpness to the queries'
  spread, so this is LLN's temperature; for LLN+Diag it sharpens the diagonal blocks too.
- ``qk_temperature``: ``qk`` and the per-head temperature: the temperature moves a head's sharpness in one step
  where AdamW would take many to rescale a whole query matrix.

The learnable LLN+Diag mix weights (``lln_mix``), where the model has them, are trained in every mode. The extra
tensors are ``torch.nn.utils.parametrize`` parametrizations, removed (their value kept) when training ends, so
the model's modules, weight names and saved files are those of an untouched model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

TRAIN_MODES = ("qk", "qkvo", "lora", "temperature", "qk_temperature")


class LowRankUpdate(nn.Module):
    """``W: (out, in) -> W + up @ down`` with ``down: (rank, in)`` random and ``up: (out, rank)`` zero, so training
    starts from ``W`` itself."""

    def __init__(self, weight: torch.Tensor, rank: int):
        super().__init__()
        out_features, in_features = weight.shape
        self.down = nn.Parameter(
            torch.randn(rank, in_features, device=weight.device, dtype=weight.dtype) / in_features**0.5
        )
        self.up = nn.Parameter(torch.zeros(out_features, rank, device=weight.device, dtype=weight.dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.up @ self.down


class HeadScale(nn.Module):
    """Scales the rows of head ``h`` of a projection's weight ``(heads·head_dim, in)`` or bias ``(heads·head_dim,)``
    by ``exp(log_scale[h])``; ``log_scale: (heads,)`` starts at 0."""

    def __init__(self, heads: int, head_dim: int, device: torch.device):
        super().__init__()
        self.head_dim = head_dim
        self.log_scale = nn.Parameter(torch.zeros(heads, device=device))

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        scale = self.log_scale.exp().repeat_interleave(self.head_dim).to(tensor.dtype)
        return tensor * scale.view(-1, *([1] * (tensor.dim() - 1)))


def _projections(layer: nn.Module, names: Sequence[str]) -> list[nn.Linear]:
    self_attention = layer.attention.self
    modules = {
        "q": self_attention.query,
        "k": self_attention.key,
        "v": self_attention.value,
        "o": layer.attention.output.dense,
    }
    return [modules[name] for name in names]


def _layer_parameters(layer: nn.Module, mode: str, lora_rank: int) -> list[nn.Parameter]:
    """Set up ``mode`` on one encoder layer and return the parameters to train."""
    if mode in ("qk", "qkvo"):
        params = [p for linear in _projections(layer, mode) for p in linear.parameters()]
    elif mode == "lora":
        params = []
        for linear in _projections(layer, "qkvo"):
            update = LowRankUpdate(linear.weight, lora_rank)
            parametrize.register_parametrization(linear, "weight", update)
            params += [update.down, update.up]
    else:  # "temperature", "qk_temperature"
        params = (
            [p for linear in _projections(layer, "qk") for p in linear.parameters()]
            if mode == "qk_temperature"
            else []
        )
        self_attention = layer.attention.self
        scale = HeadScale(
            self_attention.num_attention_heads,
            self_attention.attention_head_size,
            self_attention.query.weight.device,
        )
        for name in ("weight", "bias"):
            parametrize.register_parametrization(self_attention.query, name, scale)
        params.append(scale.log_scale)
    mix = getattr(layer.attention.self, "lln_mix", None)
    return params + (list(mix.parameters()) if mix is not None else [])


@contextlib.contextmanager
def attention_parameters(
    layers: Sequence[nn.Module], mode: str, lora_rank: int = 8
) -> Iterator[list[list[nn.Parameter]]]:
    """Inside the block only the ``mode`` parameters of each encoder layer in ``layers`` train (one list per
    layer); on leaving, LoRA updates and temperatures are folded into the weights and every parameter's
    ``requires_grad`` is restored."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"train must be one of {', '.join(map(repr, TRAIN_MODES))}; got {mode!r}")
    if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 1:
        raise ValueError(f"lora_rank must be an integer >= 1, got {lora_rank!r}")
    frozen = {param: param.requires_grad for layer in layers for param in layer.parameters()}
    for param in frozen:
        param.requires_grad_(False)
    try:
        trainable = [_layer_parameters(layer, mode, lora_rank) for layer in layers]
        for params in trainable:
            for param in params:
                param.requires_grad_(True)
        yield trainable
    finally:
        for layer in layers:
            for linear in _projections(layer, "qkvo"):
                for name in list(getattr(linear, "parametrizations", {})):
                    parametrize.remove_parametrizations(linear, name, leave_parametrized=True)
        for param, requires_grad in frozen.items():
            param.requires_grad_(requires_grad)
