"""The attention-dropout generator of the fused LLN + Diag kernels (imports triton).

Nothing of the mask is stored: each call draws one seed (``draw_seed``) and the block passes of the
forward and the backward compute the same keep mask from it (``kernels._dropout_keep``: Philox keyed
by the seed and the (batch, head), counted by query row and key column). ``keep_mask`` returns that
mask for a seed, so tests can hold the kernels to a dense reference that uses it.
"""

from __future__ import annotations

import torch
import triton

from hf_lln.ops.triton import kernels, register_block

# Seeds below 2**62 leave room for ``seed + batch * heads`` in the kernels' signed 64-bit key.
SEED_BOUND = 2**62


def draw_seed(device: torch.device) -> torch.Tensor:
    """One seed ``(1,)`` int64 on ``device`` from torch's default generator for it, so
    ``torch.manual_seed`` reproduces the mask; it stays on the device (no host synchronisation)."""
    return torch.randint(0, SEED_BOUND, (1,), dtype=torch.int64, device=device)


def block_keep(
    seed: torch.Tensor, batch_heads: int, seq: int, block_size: int, dropout_p: float
) -> torch.Tensor:
    """``(batch * heads, seq, block_size)`` bool: entry ``[bh, i, j]`` keeps query i's probability for
    key ``(i // block_size) * block_size + j`` (False past the end of the sequence)."""
    keep = torch.zeros(batch_heads, seq, block_size, dtype=torch.uint8, device=seed.device)
    block = register_block(block_size)
    kernels.dropout_keep_kernel[(triton.cdiv(seq, block_size), batch_heads)](
        seed, keep, seq, block_size, float(dropout_p), BLOCK=block
    )
    return keep.bool()


def keep_mask(
    seed: torch.Tensor, batch: int, heads: int, seq: int, block_size: int, dropout_p: float
) -> torch.Tensor:
    """The dense keep mask ``(batch, heads, seq, seq)`` bool the kernels draw for ``seed: (1,)`` int64,
    False outside the diagonal blocks (those keys are never attended)."""
    keep = block_keep(seed, batch * heads, seq, block_size, dropout_p)
    rows = torch.arange(seq, device=seed.device)
    keys = (rows // block_size * block_size)[:, None] + torch.arange(block_size, device=seed.device)
    inside = keys < seq
    dense = torch.zeros(batch * heads, seq, seq + 1, dtype=torch.bool, device=seed.device)
    # keys past the end go to a spare last column, dropped below
    dense.scatter_(2, torch.where(inside, keys, seq).expand(batch * heads, -1, -1), keep & inside)
    return dense[..., :seq].reshape(batch, heads, seq, seq)
