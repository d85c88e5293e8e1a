"""Fused non-causal cheap linear attention (kernels, launches and autograd Function; imports triton).

The maths of ``hf_lln.ops.cheap_linear.cheap_linear_attention``: with ``n`` the number of real keys of
the sequence (at least 1) and ``C = sum_j k_j v_j^T`` over them, ``out_i = (scale / n) q_i C`` for every
query row (padded ones included, as in the PyTorch path); a sequence without real keys gives zeros.

Forward: a state pass over k, v (``C`` and ``n``, float32) and a query pass over q. Backward, with
``c = scale / n`` and ``g = dout``: a query pass (``dq = c g C^T`` and ``dC = c sum_i q_i^T g_i``) and a
key pass (``dk = v dC^T``, ``dv = k dC``, zero on padded keys). LLN's passes minus its statistics, feature
maps and normaliser, with LLN's rules for sums over the sequence (stored or added atomically,
``functions._split``) and for rebuilding the state in the backward rather than keeping it, and its
layout conventions (``kernels.py``): strided ``(batch, heads, seq, dim)`` tensors, grid axis 1 =
``batch * heads``.
Products: operands in the input dtype where both are inputs (exact products, float32 sums), tf32 for
half inputs against the float32 state, 3xtf32 for float32 inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hf_lln.ops.triton import functions
from hf_lln.ops.triton.functions import (
    _bhs_strides,
    _empty_like_layout,
    _mask_args,
    _split,
    _unit_last_stride,
    key_mask,
    launch_plan,
)
from hf_lln.ops.triton.kernels import _dot, _dot_in, _key_ok, _load_rows, _reduce_out
from hf_lln.ops.triton.launch import launch


@triton.jit
def cheap_state_kernel(
    K, V, MASK, STATE, COUNT,
    stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs, stride_mb,
    heads, seq, tiles_per_program,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HALF: tl.constexpr,
    ATOMIC: tl.constexpr,
):  # fmt: skip
    """``C += sum_j k_j v_j^T`` and ``n += #j`` over the real keys of this program's tiles (``_reduce_out``).
    Padded keys load as zeros (k and v both, so that whatever padding holds never reaches ``C``)."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    state = tl.zeros([D, DV], tl.float32)
    count = tl.zeros([BLOCK], tl.float32)
    first = pid_c * tiles_per_program
    for i in range(tiles_per_program):
        rows = (first + i) * BLOCK + tl.arange(0, BLOCK)
        ok = _key_ok(MASK + b * stride_mb, rows, rows < seq, HAS_MASK)
        k_in = _load_rows(k_base, rows, ok, cols, stride_ks)
        v_in = _load_rows(v_base, rows, ok, vcols, stride_vs)
        state += _dot_in(tl.trans(k_in), v_in, k_in, HALF)
        count += ok.to(tl.float32)
    _reduce_out(STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :], state, ATOMIC)
    _reduce_out(COUNT + pid_bh, tl.sum(count, axis=0), ATOMIC)


@triton.jit
def _scaled_state(STATE, COUNT, pid_bh, scale, D: tl.constexpr, DV: tl.constexpr):
    """``(scale / max(n, 1)) C`` of one (batch, head): (D, DV) float32."""
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    state = tl.load(STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :])
    return state * (scale / tl.maximum(tl.load(COUNT + pid_bh), 1.0))


@triton.jit
def cheap_output_kernel(
    Q, OUT, STATE, COUNT,
    stride_qb, stride_qh, stride_qs, stride_ob, stride_oh, stride_os,
    heads, seq, tiles_per_program, scale,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """``out_i = (scale / n) q_i C`` for the rows of this program's tiles."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    q_base = Q + b * stride_qb + h * stride_qh
    o_base = OUT + b * stride_ob + h * stride_oh
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    state = _scaled_state(STATE, COUNT, pid_bh, scale, D, DV)
    first = pid_c * tiles_per_program
    for i in range(tiles_per_program):
        rows = (first + i) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < seq
        q = _load_rows(q_base, rows, row_ok, cols, stride_qs).to(tl.float32)
        out = _dot(q, state, HALF)
        tl.store(
            o_base + rows[:, None] * stride_os + vcols[None, :],
            out.to(OUT.dtype.element_ty),
            mask=row_ok[:, None],
        )


@triton.jit
def cheap_backward_query_kernel(
    Q, GRAD, DQ, STATE, COUNT, D_STATE,
    stride_qb, stride_qh, stride_qs, stride_gb, stride_gh, stride_gs, stride_dqb, stride_dqh, stride_dqs,
    heads, seq, tiles_per_program, scale,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HALF: tl.constexpr, ATOMIC: tl.constexpr,
):  # fmt: skip
    """``dq_i = (scale / n) g_i C^T`` (stored) and ``dC += (scale / n) q_i^T g_i`` (``_reduce_out``) over the
    program's tiles."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    q_base = Q + b * stride_qb + h * stride_qh
    g_base = GRAD + b * stride_gb + h * stride_gh
    dq_base = DQ + b * stride_dqb + h * stride_dqh
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    factor = scale / tl.maximum(tl.load(COUNT + pid_bh), 1.0)
    state = _scaled_state(STATE, COUNT, pid_bh, scale, D, DV)
    d_state = tl.zeros([D, DV], tl.float32)
    first = pid_c * tiles_per_program
    for i in range(tiles_per_program):
        rows = (first + i) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < seq
        q_in = _load_rows(q_base, rows, row_ok, cols, stride_qs)
        g_in = _load_rows(g_base, rows, row_ok, vcols, stride_gs)
        d_state += _dot_in(tl.trans(q_in), g_in, q_in, HALF)
        dq = _dot(g_in.to(tl.float32), tl.trans(state), HALF)
        tl.store(
            dq_base + rows[:, None] * stride_dqs + cols[None, :],
            dq.to(DQ.dtype.element_ty),
            mask=row_ok[:, None],
        )
    _reduce_out(D_STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :], d_state * factor, ATOMIC)


@triton.jit
def cheap_backward_key_kernel(
    K, V, MASK, DK, DVAL, D_STATE,
    stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs,
    stride_dkb, stride_dkh, stride_dks, stride_dvb, stride_dvh, stride_dvs, stride_mb,
    heads, seq,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """``dk_j = v_j dC^T``, ``dv_j = k_j dC`` for one tile of keys; zero for padded keys (loaded as zeros)."""
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    rows = pid_t * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < seq
    ok = _key_ok(MASK + b * stride_mb, rows, row_ok, HAS_MASK)
    d_state = tl.load(D_STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :])
    k = _load_rows(K + b * stride_kb + h * stride_kh, rows, ok, cols, stride_ks).to(tl.float32)
    v = _load_rows(V + b * stride_vb + h * stride_vh, rows, ok, vcols, stride_vs).to(tl.float32)
    dk = _dot(v, tl.trans(d_state), HALF)
    dv = _dot(k, d_state, HALF)
    dk_ptr = DK + b * stride_dkb + h * stride_dkh + rows[:, None] * stride_dks + cols[None, :]
    dv_ptr = DVAL + b * stride_dvb + h * stride_dvh + rows[:, None] * stride_dvs + vcols[None, :]
    tl.store(dk_ptr, dk.to(DK.dtype.element_ty), mask=row_ok[:, None])
    tl.store(dv_ptr, dv.to(DVAL.dtype.element_ty), mask=row_ok[:, None])


def _split_state(buffer: torch.Tensor, bh: int, head_dim: int, v_dim: int):
    return buffer[: bh * head_dim * v_dim].view(bh, head_dim, v_dim), buffer[bh * head_dim * v_dim :]


def _state(k, v, mask, plan):
    """One float32 buffer holding ``C: (bh, head_dim, v_dim)`` and ``n: (bh,)`` (``_split_state``; zero-filled
    where several programs add into it)."""
    batch, heads, seq, head_dim = k.shape
    v_dim = v.shape[-1]
    bh = batch * heads
    per_program, chunks = _split(bh, triton.cdiv(seq, plan.rows), k.device)
    allocate = torch.zeros if chunks > 1 else torch.empty
    buffer = allocate(bh * (head_dim * v_dim + 1), dtype=torch.float32, device=k.device)
    state, count = _split_state(buffer, bh, head_dim, v_dim)
    mask_arg, stride_mb = _mask_args(mask, k)
    launch(cheap_state_kernel, (chunks, bh),
        k, v, mask_arg, state, count,
        *_bhs_strides(k), *_bhs_strides(v), stride_mb,
        heads, seq, per_program,
        D=head_dim, DV=v_dim, BLOCK=plan.rows, HAS_MASK=mask is not None, HALF=k.dtype != torch.float32,
        ATOMIC=chunks > 1, num_warps=plan.warps,
    )  # fmt: skip
    return buffer


# An autograd Function in eager mode, custom operators joined by register_autograd under torch.compile (see
# functions.py); the backward rebuilds the state, as LLN's does.


def _cheap_forward(q, k, v, mask, scale):
    batch, heads, seq, head_dim = q.shape
    v_dim = v.shape[-1]
    plan = launch_plan(head_dim, v_dim)
    buffer = _state(k, v, mask, plan)
    state, count = _split_state(buffer, batch * heads, head_dim, v_dim)
    out = _empty_like_layout(q, v_dim)
    num_tiles = triton.cdiv(seq, plan.rows)
    per_program = functions.output_tiles(batch * heads, num_tiles, q.device)
    launch(cheap_output_kernel, (triton.cdiv(num_tiles, per_program), batch * heads),
        q, out, state, count,
        *_bhs_strides(q), *_bhs_strides(out),
        heads, seq, per_program, scale,
        D=head_dim, DV=v_dim, BLOCK=plan.rows, HALF=q.dtype != torch.float32,
        num_warps=plan.warps,
    )  # fmt: skip
    return out


def _cheap_backward(grad, q, k, v, mask, scale):
    """Gradients, with the state rebuilt from k, v (``functions._lln_backward`` says why)."""
    batch, heads, seq, head_dim = q.shape
    v_dim = v.shape[-1]
    plan = launch_plan(head_dim, v_dim)
    state, count = _split_state(_state(k, v, mask, plan), batch * heads, head_dim, v_dim)
    half = q.dtype != torch.float32
    grad = _unit_last_stride(grad)
    dq, dk, dv = (
        _empty_like_layout(q, head_dim),
        _empty_like_layout(k, head_dim),
        _empty_like_layout(v, v_dim),
    )
    per_program, chunks = _split(batch * heads, triton.cdiv(seq, plan.rows), q.device)
    d_state = torch.zeros_like(state) if chunks > 1 else torch.empty_like(state)
    launch(cheap_backward_query_kernel, (chunks, batch * heads),
        q, grad, dq, state, count, d_state,
        *_bhs_strides(q), *_bhs_strides(grad), *_bhs_strides(dq),
        heads, seq, per_program, scale,
        D=head_dim, DV=v_dim, BLOCK=plan.rows, HALF=half, ATOMIC=chunks > 1,
        num_warps=plan.warps_query,
    )  # fmt: skip
    mask_arg, stride_mb = _mask_args(mask, q)
    launch(cheap_backward_key_kernel, (triton.cdiv(seq, plan.rows), batch * heads),
        k, v, mask_arg, dk, dv, d_state,
        *_bhs_strides(k), *_bhs_strides(v), *_bhs_strides(dk), *_bhs_strides(dv), stride_mb,
        heads, seq,
        D=head_dim, DV=v_dim, BLOCK=plan.rows, HAS_MASK=mask is not None, HALF=half,
        num_warps=plan.warps,
    )  # fmt: skip
    return dq, dk, dv


Tensor = torch.Tensor


@torch.library.custom_op("hf_lln::fused_cheap_linear_forward", mutates_args=())
def _cheap_forward_op(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    return _cheap_forward(q, k, v, mask, scale)


@_cheap_forward_op.register_fake
def _(q, k, v, mask, scale):
    return _empty_like_layout(q, v.shape[-1])


@torch.library.custom_op("hf_lln::fused_cheap_linear_backward", mutates_args=())
def _cheap_backward_op(
    grad: Tensor, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    return _cheap_backward(grad, q, k, v, mask, scale)


@_cheap_backward_op.register_fake
def _(grad, q, k, v, mask, scale):
    return (
        _empty_like_layout(q, q.shape[-1]),
        _empty_like_layout(k, k.shape[-1]),
        _empty_like_layout(v, v.shape[-1]),
    )


def _cheap_setup_context(ctx, inputs, output):
    q, k, v, mask, scale = inputs
    ctx.save_for_backward(q, k, v, mask)
    ctx.scale = scale


def _cheap_grads(ctx, grad):
    q, k, v, mask = ctx.saved_tensors
    dq, dk, dv = torch.ops.hf_lln.fused_cheap_linear_backward(grad, q, k, v, mask, ctx.scale)
    return dq, dk, dv, None, None


_cheap_forward_op.register_autograd(_cheap_grads, setup_context=_cheap_setup_context)


class _FusedCheapLinear(torch.autograd.Function):
    """The eager entry point: the same passes as the custom operators, without their dispatch overhead."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale):
        ctx.save_for_backward(q, k, v, mask)
        ctx.scale = scale
        return _cheap_forward(q, k, v, mask, scale)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, mask = ctx.saved_tensors
        return *_cheap_backward(grad, q, k, v, mask, ctx.scale), None, None


def fused_cheap_linear(q, k, v, mask, *, scale):
    """Run the fused operator (differentiable); inputs already validated
    (``hf_lln.ops.triton.fused_cheap_linear_attention``)."""
    q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
    mask = key_mask(mask)
    if torch.compiler.is_compiling():
        return torch.ops.hf_lln.fused_cheap_linear_forward(q, k, v, mask, float(scale))
    return _FusedCheapLinear.apply(q, k, v, mask, float(scale))
