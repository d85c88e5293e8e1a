"""The operator variants under test: fast path, dense reference, and the keyword arguments each takes."""

from __future__ import annotations

import torch

from hf_lln import ops
from hf_lln.ops import reference
from hf_lln.variants import VARIANTS


def _mix_weights(mode: str, heads: int, v_dim: int, dtype, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    if mode == "average":
        return {}
    r = (0.5 + 0.3 * torch.rand(heads, v_dim, generator=generator)).to(dtype).requires_grad_()
    if mode == "learnable_ratio":
        return {"lln_weight": r}
    p = (0.5 + 0.3 * torch.rand(heads, v_dim, generator=generator)).to(dtype).requires_grad_()
    return {"lln_weight": r, "diag_weight": p}


def variant_kwargs(name: str, heads: int, head_dim: int, v_dim: int, dtype) -> dict:
    """Fresh keyword arguments (learnable weights are new leaf tensors on each call)."""
    if name == "performer":
        return {"projection": ops.performer_projection(2 * head_dim, head_dim, seed=3, dtype=torch.float64)}
    if name == "block_diag_16":
        return {"block_size": 16}
    if name.startswith("lln_diag_"):
        mode = name.removeprefix("lln_diag_")
        return {"mix": mode, "block_size": 16, **_mix_weights(mode, heads, v_dim, dtype)}
    return {}


# Every registered variant, the block-diagonal softmax LLN+Diag mixes in, and LLN+Diag in each mix mode.
_EXTRA = {
    "block_diag": (ops.block_diag_attention, reference.dense_block_diag),
    "block_diag_16": (ops.block_diag_attention, reference.dense_block_diag),
    **{f"lln_diag_{mode}": (ops.lln_diag_attention, reference.dense_lln_diag) for mode in ops.MIX_MODES},
}
_PAIRS = {
    **{name: (row.op, row.reference) for name, row in VARIANTS.items() if name != "lln_diag"},
    **_EXTRA,
}
FAST = {name: pair[0] for name, pair in _PAIRS.items()}
DENSE = {name: pair[1] for name, pair in _PAIRS.items()}

NAMES = tuple(FAST)


def random_qkv(batch, heads, seq, head_dim, *, dtype=torch.float64, seed=0, spread=1.0, v_dim=None):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, heads, seq, head_dim)
    q = spread * torch.randn(shape, generator=generator, dtype=torch.float64)
    k = spread * torch.randn(shape, generator=generator, dtype=torch.float64)
    v = torch.randn((batch, heads, seq, v_dim or head_dim), generator=generator, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def random_mask(batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    """Right padding of random lengths; the first sequence is full, the last has at least one token."""
    generator = torch.Generator().manual_seed(seed + 100)
    lengths = torch.randint(1, seq + 1, (batch,), generator=generator)
    lengths[0] = seq
    return torch.arange(seq)[None, :] < lengths[:, None]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` in the 2-norm, with ``|b|`` floored at 0.01 per element so that a reference that is zero
    by symmetry (e.g. the query gradient of a single-key row) is compared in absolute terms."""
    a, b = a.double(), b.double()
    floor = 1e-2 * b.numel() ** 0.5
    return ((a - b).norm() / b.norm().clamp_min(floor)).item()
