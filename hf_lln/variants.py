"""The attention variants hf_lln provides: one row each, and every other module reads this table.

A row names the variant's fast operator and dense reference (``hf_lln.ops``), its attention matrix for the
analysis, the ``lln_*`` config fields it reads and how they become the operator's keyword arguments, and the
sentence that describes it in model cards. Adding a variant is: an operator in ``hf_lln/ops``, its dense
reference in ``hf_lln/ops/reference.py``, one row here, and its tests (``docs/ARCHITECTURE.md``).

Softmax is not a row: Transformers' own implementations (``SOFTMAX_IMPLEMENTATIONS``) compute it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from hf_lln.ops.baselines import (
    cosformer_attention,
    linear_elu_attention,
    performer_attention,
    performer_projection,
)
from hf_lln.ops.cheap_linear import cheap_linear_attention
from hf_lln.ops.lln import lln_attention
from hf_lln.ops.lln_diag import lln_diag_attention
from hf_lln.ops.reference import (
    cheap_linear_matrix,
    cosformer_matrix,
    dense_cheap_linear,
    dense_cosformer,
    dense_linear_elu,
    dense_lln,
    dense_lln_diag,
    dense_performer,
    linear_elu_matrix,
    lln_diag_matrix,
    lln_matrix,
    performer_matrix,
)

# Transformers' built-in attention implementations, all of which compute ordinary softmax attention.
SOFTMAX_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
SOFTMAX_DESCRIPTION = "ordinary softmax attention (the quadratic baseline)."


@dataclass(frozen=True)
class Variant:
    """One attention variant.

    - ``op``: the fast operator, ``op(q, k, v, mask, *, causal, [scale,] **options)`` with ``q, k: (batch,
      heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)``, ``mask: (batch, seq)`` bool.
    - ``reference``: the dense O(seq²) reference with the same arguments.
    - ``matrix``: ``matrix(q, k, mask, *, causal, [scale,] ...)`` -> ``(batch, heads, seq, seq)`` attention
      matrix (for ``lln_diag`` the ``average`` mix); it takes the subset of ``options`` it names.
    - ``settings``: the ``lln_*`` config fields (``hf_lln.models.configuration_lln``) the variant reads.
    - ``options``: ``options(settings, head_dim, layer_index)`` -> the operator's keyword arguments from
      those fields (the layer index seeds per-layer constants such as Performer's projection).
    - ``takes_scale``: whether the operator takes the softmax temperature ``scale``.
    - ``takes_dropout``: whether the operator applies attention dropout (``dropout_p``).
    - ``row_stochastic``: whether each row of the matrix is a distribution over keys.
    """

    name: str
    description: str
    op: Callable
    reference: Callable
    matrix: Callable
    settings: tuple[str, ...]
    options: Callable[[Mapping, int, int], dict]
    takes_scale: bool = True
    takes_dropout: bool = False
    row_stochastic: bool = True

    def matrix_options(self, options: Mapping) -> dict:
        """The entries of ``options`` that ``matrix`` takes."""
        return {key: value for key, value in options.items() if key in _parameters(self.matrix)}


@functools.cache
def _parameters(function: Callable) -> frozenset[str]:
    return frozenset(inspect.signature(function).parameters)


def performer_layer_projection(num_features: int, head_dim: int, seed: int) -> torch.Tensor:
    """The fixed FAVOR+ projection ``(num_features, head_dim)`` (float32, CPU) of a layer, built once per
    ``(num_features, head_dim, seed)``. Under ``torch.compile`` it is an opaque operator, since drawing it takes a
    seeded ``torch.Generator``, which would break the graph."""
    return torch.ops.hf_lln.performer_projection(num_features, head_dim, seed)


@functools.lru_cache(maxsize=256)
def _performer_projection(num_features: int, head_dim: int, seed: int) -> torch.Tensor:
    return performer_projection(num_features, head_dim, seed=seed)


# A saved model's remote-code copy of this module may load beside hf_lln itself: register the operator once.
if not hasattr(torch.ops.hf_lln, "performer_projection"):

    @torch.library.custom_op("hf_lln::performer_projection", mutates_args=())
    def _performer_projection_op(num_features: int, head_dim: int, seed: int) -> torch.Tensor:
        return _performer_projection(num_features, head_dim, seed).clone()

    @_performer_projection_op.register_fake
    def _(num_features: int, head_dim: int, seed: int) -> torch.Tensor:
        return torch.empty(num_features, head_dim, dtype=torch.float32)


def _no_options(settings, head_dim, layer_index) -> dict:
    return {}


def _eps(settings, head_dim, layer_index) -> dict:
    return {"eps": settings["lln_eps"]}


def _lln(settings, head_dim, layer_index) -> dict:
    return {"eps": settings["lln_eps"], "stats": settings["lln_stats"]}


def _lln_diag(settings, head_dim, layer_index) -> dict:
    return {
        **_lln(settings, head_dim, layer_index),
        "mix": settings["lln_mix_mode"],
        "block_size": settings["lln_block_size"],
    }


def _performer(settings, head_dim, layer_index) -> dict:
    # One fixed projection per layer: the seed is offset by the layer index so layers do not share features.
    seed = settings["lln_performer_seed"] + layer_index
    return {
        "eps": settings["lln_eps"],
        "projection": performer_layer_projection(settings["lln_performer_features"], head_dim, seed),
    }


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant(
            name="lln",
            description="LLN attention (Linear Log-Normal attention, Nahshan et al., ICLR 2024): feature maps "
            "exp(alpha q) and exp(beta k) with alpha and beta chosen by moment matching so that the attention is as "
            "concentrated as softmax; linear in the sequence length.",
            op=lln_attention,
            reference=dense_lln,
            matrix=lln_matrix,
            settings=("lln_eps", "lln_stats"),
            options=_lln,
        ),
        Variant(
            name="lln_diag",
            description="LLN+Diag attention (Nahshan et al., ICLR 2024): LLN attention combined with ordinary "
            "softmax attention inside small diagonal blocks, which restores the sharp local attention LLN alone "
            "lacks; linear in the sequence length.",
            op=lln_diag_attention,
            reference=dense_lln_diag,
            matrix=lln_diag_matrix,
            settings=("lln_stats", "lln_mix_mode", "lln_block_size", "lln_eps"),
            options=_lln_diag,
            takes_dropout=True,
        ),
        Variant(
            name="cheap_linear",
            description="cheap linear attention (de Brébisson & Vincent, 2016): attention without softmax, "
            "out_i = mean_j (q_i·k_j) v_j; linear in the sequence length.",
            op=cheap_linear_attention,
            reference=dense_cheap_linear,
            matrix=cheap_linear_matrix,
            settings=(),
            options=_no_options,
            row_stochastic=False,
        ),
        Variant(
            name="linear_elu",
            description="linear attention with the elu(x)+1 feature map (Katharopoulos et al., 2020).",
            op=linear_elu_attention,
            reference=dense_linear_elu,
            matrix=linear_elu_matrix,
            settings=("lln_eps",),
            options=_eps,
            takes_scale=False,
        ),
        Variant(
            name="performer",
            description="Performer FAVOR+ attention (Choromanski et al., 2021): positive orthogonal random "
            "features approximating softmax.",
            op=performer_attention,
            reference=dense_performer,
            matrix=performer_matrix,
            settings=("lln_eps", "lln_performer_features", "lln_performer_seed"),
            options=_performer,
        ),
        Variant(
            name="cosformer",
            description="cosFormer attention (Qin et al., 2022): ReLU features with a cosine re-weighting by "
            "position.",
            op=cosformer_attention,
            reference=dense_cosformer,
            matrix=cosformer_matrix,
            settings=("lln_eps",),
            options=_eps,
            takes_scale=False,
        ),
    )
}
ATTENTION_VARIANTS = tuple(VARIANTS)


def _unknown(argument: str, name, known: tuple[str, ...]) -> ValueError:
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    softmax = [item for item in known if item in SOFTMAX_IMPLEMENTATIONS]
    also = f", or one of Transformers' softmax implementations {', '.join(softmax)}" if softmax else ""
    return ValueError(
        f"{argument} must be one of hf_lln's attention variants {', '.join(map(repr, ATTENTION_VARIANTS))}{also}: "
        f"{name!r} is not an attention implementation.{hint}"
    )


def get_variant(name: str, argument: str = "variant") -> Variant:
    """The registry row of ``name``; a clear ``ValueError`` (naming ``argument`` and a close match) otherwise."""
    if name not in VARIANTS:
        raise _unknown(argument, name, ATTENTION_VARIANTS)
    return VARIANTS[name]


def check_attn_implementation(name: str, argument: str = "attn_implementation") -> None:
    """Raise a ``ValueError`` naming ``argument``, hf_lln's variants and a close match unless ``name`` is one of
    them or a Transformers softmax implementation."""
    if name not in VARIANTS and name not in SOFTMAX_IMPLEMENTATIONS:
        raise _unknown(argument, name, ATTENTION_VARIANTS + SOFTMAX_IMPLEMENTATIONS)


def is_softmax(name: str) -> bool:
    """Whether ``name`` is one of Transformers' softmax implementations."""
    return name in SOFTMAX_IMPLEMENTATIONS


def description(name: str) -> str:
    """The model-card sentence for an attention implementation (softmax for Transformers' own)."""
    return VARIANTS[name].description if name in VARIANTS else SOFTMAX_DESCRIPTION
