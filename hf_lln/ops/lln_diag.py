"""LLN+Diag: LLN attention combined with block-diagonal softmax, the paper's three mix modes.

- ``average``: ``0.5·LLN + 0.5·Diag``.
- ``learnable_scale``: ``r·LLN + p·Diag`` with ``r = lln_weight`` and ``p = diag_weight``, each ``(heads, v_dim)``
  (initialised to 0.5 by the model classes that own them).
- ``learnable_ratio``: ``r·LLN + (1 - r)·Diag`` with ``r = lln_weight: (heads, v_dim)``.

Dropout (``dropout_p``) applies to the block-diagonal softmax probabilities; the LLN part has none.
"""

from __future__ import annotations

import torch

from hf_lln.ops._checks import check_choice, check_dropout, check_positive_int, check_tensor, compute_dtype
from hf_lln.ops.block_diag import block_diag_torch
from hf_lln.ops.dispatch import choose_backend, triton_kernels
from hf_lln.ops.lln import check_lln_args, lln_torch

MIX_MODES = ("average", "learnable_scale", "learnable_ratio")


def check_mix(mix, lln_weight, diag_weight, heads: int, v_dim: int) -> None:
    check_choice("mix", mix, MIX_MODES)
    wanted = {"average": (False, False), "learnable_scale": (True, True), "learnable_ratio": (True, False)}[
        mix
    ]
    for name, weight, needed in (
        ("lln_weight", lln_weight, wanted[0]),
        ("diag_weight", diag_weight, wanted[1]),
    ):
        if needed and weight is None:
            raise ValueError(f"mix={mix!r} needs {name} of shape (heads, v_dim) = ({heads}, {v_dim})")
        if not needed and weight is not None:
            raise ValueError(f"mix={mix!r} takes no {name}; pass None")
        if weight is not None:
            check_tensor(name, weight, 2, f"(heads, v_dim) = ({heads}, {v_dim})")
            if tuple(weight.shape) != (heads, v_dim):
                raise ValueError(
                    f"{name} must have shape (heads, v_dim) = ({heads}, {v_dim}), got {tuple(weight.shape)}"
                )


def mix_outputs(lln_out, diag_out, mix, lln_weight, diag_weight) -> torch.Tensor:
    """Combine ``(batch, heads, seq, v_dim)`` outputs; weights ``(heads, v_dim)`` broadcast over batch and seq."""
    if mix == "average":
        return 0.5 * (lln_out + diag_out)
    r = lln_weight[:, None, :].to(lln_out.dtype)
    if mix == "learnable_scale":
        return r * lln_out + diag_weight[:, None, :].to(lln_out.dtype) * diag_out
    return r * lln_out + (1.0 - r) * diag_out


def lln_diag_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    mix: str = "average",
    lln_weight: torch.Tensor | None = None,
    diag_weight: torch.Tensor | None = None,
    block_size: int | None = None,
    causal: bool = False,
    scale: float | None = None,
    eps: float = 1e-6,
    stats: str = "per_sequence",
    dropout_p: float = 0.0,
    chunk_size: int = 64,
) -> torch.Tensor:
    """LLN+Diag. ``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)``, ``mask: (batch, seq)``
    bool -> ``(batch, heads, seq, v_dim)``. Arguments as in ``lln_attention`` and ``block_diag_attention``."""
    check_lln_args(q, k, v, mask, scale=scale, eps=eps, stats=stats, chunk_size=chunk_size)
    check_mix(mix, lln_weight, diag_weight, q.shape[1], v.shape[-1])
    if block_size is not None:
        check_positive_int("block_size", block_size)
    check_dropout(dropout_p)
    options = {"causal": causal, "dropout_p": dropout_p, "block_size": block_size}
    if choose_backend("lln_diag", q, k, v, mask, **options) == "triton":
        return triton_kernels.run_lln_diag(
            q,
            k,
            v,
            mask,
            mix=mix,
            lln_weight=lln_weight,
            diag_weight=diag_weight,
            block_size=block_size,
            scale=scale,
            eps=eps,
            stats=stats,
            dropout_p=dropout_p,
        )
    lln_out = lln_torch(
        q, k, v, mask, causal=causal, scale=scale, eps=eps, stats=stats, chunk_size=chunk_size
    )
    diag_out = block_diag_torch(
        q, k, v, mask, block_size=block_size, causal=causal, scale=scale, dropout_p=dropout_p
    )
    dtype = compute_dtype(q.dtype)
    return mix_outputs(lln_out.to(dtype), diag_out.to(dtype), mix, lln_weight, diag_weight).to(q.dtype)
