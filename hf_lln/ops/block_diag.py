"""Block-diagonal softmax attention: ordinary scaled softmax inside consecutive blocks of ``block_size`` tokens.

The sequence is padded to a multiple of ``block_size`` and reshaped so that each block is one attention problem
for PyTorch's ``scaled_dot_product_attention``; without a padding mask and with whole blocks the fused (flash)
kernels run on GPU. Dropout applies to the probabilities inside the blocks, as in softmax attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_lln.ops._checks import check_dropout, check_positive_int, check_qkv, check_scale


def block_diag_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    block_size: int | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Softmax attention restricted to diagonal blocks. ``q, k: (batch, heads, seq, head_dim)``,
    ``v: (batch, heads, seq, v_dim)``, ``mask: (batch, seq)`` bool -> ``(batch, heads, seq, v_dim)``.

    ``block_size`` defaults to head_dim (the paper's choice); the last block may be partial. Padded keys are
    masked; causal masking applies inside a block; a row with no visible key in its block gives zeros.
    """
    check_qkv(q, k, v, mask)
    if block_size is not None:
        check_positive_int("block_size", block_size)
    check_scale(scale)
    check_dropout(dropout_p)
    return block_diag_torch(
        q, k, v, mask, block_size=block_size, causal=causal, scale=scale, dropout_p=dropout_p
    )


def block_diag_torch(q, k, v, mask=None, *, block_size=None, causal=False, scale=None, dropout_p=0.0):
    """``block_diag_attention`` on inputs already validated (the PyTorch path, through SDPA)."""
    batch, heads, seq, head_dim = q.shape
    block = head_dim if block_size is None else block_size
    pad = (-seq) % block
    blocks = (seq + pad) // block
    # A traced graph (the legacy ONNX exporter) must pad whatever length it later sees, so it always pads.
    if torch.jit.is_tracing() or pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        real = torch.ones(batch, seq, dtype=torch.bool, device=q.device) if mask is None else mask
        mask = F.pad(real, (0, pad), value=False)

    def split(t):
        return t.reshape(batch * heads, blocks, block, t.shape[-1])

    qb, kb, vb = split(q), split(k), split(v)
    if mask is None:
        out = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=dropout_p, is_causal=causal, scale=scale)
        return out.reshape(batch, heads, seq, -1)

    visible = mask.reshape(batch, 1, blocks, 1, block)
    if causal:
        visible = visible & torch.ones(block, block, dtype=torch.bool, device=q.device).tril()
    visible = visible.expand(batch, heads, blocks, block, block).reshape(batch * heads, blocks, block, block)
    has_key = visible.any(dim=-1, keepdim=True)
    # SDPA kernels disagree on fully masked rows (NaN or 0): let such rows see every key, then zero them.
    out = F.scaled_dot_product_attention(
        qb, kb, vb, attn_mask=visible | ~has_key, dropout_p=dropout_p, scale=scale
    )
    out = out.masked_fill(~has_key, 0.0)
    return out.reshape(batch, heads, blocks * block, -1)[:, :, :seq]
