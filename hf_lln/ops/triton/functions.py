"""Launches and autograd Functions around the kernels in ``kernels.py`` (imports triton).

Forward: a statistics pass over q, k (moments and per-channel extremes of k), alpha, beta and the
shift ``M_c`` from them (one small launch per (batch, head), or host ops for global statistics), a
state pass over k, v (``S, z``), and an output pass over q (plus k, v of each diagonal block).
Backward: the state pass again (the state is rebuilt, not kept), an LLN query pass (``dq``, ``dS, dz``,
``d w_lln``), for LLN + Diag a block pass (the block softmax's ``dq, dk, dv`` and ``d w_diag``), and a key
pass (the LLN part of ``dk, dv``). LLN + Diag's average mix is a constant of the kernels (``WEIGHTED``
off): no weight tensors, no weight gradients, no zero fill for them.

Passes that reduce over the sequence (``_split``): where the batch is small, each (batch, head) shares its
tiles out to several programs, which finish with one atomic add into a zero-filled buffer, so long sequences
still fill the GPU. Where one program per (batch, head) fills it (large batches of short sequences, where the
host's time per call decides the step), each program covers its whole sequence and stores its sums: no zero
fills, the statistics, scales and state passes run as one ``lln_prologue_kernel``, and the state, query and
key passes of the backward as one ``lln_backward_unsplit_kernel``. Fewer launches per call: at 512 tokens an
LLN forward+backward is three launches, LLN + Diag's four and a seed draw (docs/kernels.md).

Launches go through ``launch.launch``, which calls Triton's compiled kernel directly after a specialisation's first
launch (about a quarter of Triton's host time per launch).

Layout: q, k, v and the incoming gradient are read through their strides (a copy only for a last stride other
than 1), and out, dq, dk, dv are allocated in the memory order of the tensor they belong to, so Transformers'
``(batch, seq, heads, dim)`` views cost no copy in either direction. The mask is copied once per call into the
int32 form the kernels read (``key_mask``), and once more, into bytes, for an unsplit backward (``_byte_mask``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton

from hf_lln.ops.moments import MIN_STD, lln_feature_scales, moment_constants
from hf_lln.ops.triton import kernels, register_block
from hf_lln.ops.triton.dropout import draw_seed
from hf_lln.ops.triton.launch import launch

# Rows per tile of the passes over tokens: 32-row tiles keep every row pass free of spills up to head
# size 64 (64-row tiles needed 255 registers and spilled in the backward); 128-wide heads hold four
# times the state, so they take 16-row tiles and twice the warps. docs/kernels.md has the counts.
ROW_BLOCK = 32
WIDE_ROW_BLOCK = 16
PIPELINE_STAGES = 3  # Triton's default on NVIDIA GPUs: loads in flight per loop


@dataclass
class LaunchConfig:
    """Tuning knobs (``hf_lln.experiments.bench_kernels`` compares settings); defaults from the H100 runs."""

    # A pass that reduces over the sequence shares each (batch, head)'s tiles out to about this many programs per
    # SM in all, ...
    programs_per_sm: int = 8
    # ... unless one program per (batch, head) gives at least this many programs per SM: then each covers its
    # whole sequence and stores its sums (``_split``): four or five launches fewer per forward and backward
    # where the host's time per call decides the step (large batches of short sequences)
    unsplit_programs_per_sm: int = 4
    # Row tiles per program of an output pass where one program per (batch, head) covers each reduction: such a
    # call has programs to spare, and a program that covers several tiles loads the (head_dim, v_dim) state once
    # for all of them (H200, bf16, 65,536 tokens at seq 512: LLN+Diag's output pass 0.165 against 0.192 ms a
    # call at one tile; 16 tiles within 0.004 ms of 8). Where sequences are shared out, every program is needed: one
    # tile each.
    output_tiles_per_program: int = 8
    num_warps: int = 4  # the state, LLN output and key passes over row tiles
    num_warps_stats: int = 8  # the statistics pass (six per-slot sums)
    # The prologue (statistics, scales and state in one program per (batch, head)) keeps six per-row-slot sums
    # and the state: 16-row tiles at 4 warps take 128 registers at head size 64 (32-row tiles 246), at 8 warps 80
    # (32-row tiles 127); on an H200, 4 warps and 16 rows were the fastest of these (docs/benchmark.md, fifth
    # December run, before the statistics loop was pipelined: 120, 167, 64 and 120 registers; seventh run, 32 rows
    # at 8 warps: 0.270 against 0.215 ms a call at 512 tokens).
    num_warps_prologue: int = 4
    prologue_rows: int = 16
    num_warps_backward: int = 4  # the LLN query pass of the backward
    # Two, not three, loads in flight in the LLN query pass: with three, Triton 3.8 spills 224 bytes at head
    # size 64 (255 registers); with two it uses 252 and spills none, still two 4-warp programs per SM.
    num_stages_backward: int = 2
    # The whole LLN backward of one (batch, head) (``lln_backward_unsplit_kernel``) holds the state and its
    # gradient at once: at 4 warps it spills 104 bytes (head size 64), at 8 it spills none, yet on an H200 it
    # took 0.84 ms a call at 4 warps and 1.30 at 8 (bf16, 65,536 tokens at seq 512; docs/benchmark.md)
    num_warps_backward_unsplit: int = 4
    # Rows per tile of that kernel at head sizes up to 64 (wider heads take ``WIDE_ROW_BLOCK``): at 16 ptxas gives it
    # 168-226 registers and no spill at 4 warps (sm_90, bf16, head size 64), yet on an H200 it took 1.07 ms a call
    # against 32's 0.85 (docs/kernels.md)
    backward_unsplit_rows: int = ROW_BLOCK
    num_warps_diag: int = 4  # the forward output pass with the block softmax
    num_warps_diag_backward: int = 4  # the block softmax's backward pass
    num_warps_wide: int = 8  # every pass when head_dim or v_dim is 128


launch_config = LaunchConfig()


@dataclass(frozen=True)
class LaunchPlan:
    """Rows per tile of the passes over tokens and the warps of each pass, for one head size."""

    rows: int
    warps: int  # the state, LLN output and key passes
    warps_stats: int
    warps_prologue: int
    rows_prologue: int
    warps_query: int  # the LLN query pass of the backward
    warps_backward_unsplit: int  # the whole LLN backward in one program per (batch, head)
    rows_backward_unsplit: int  # its rows per tile
    warps_diag: int  # the forward output pass with the block softmax
    warps_diag_backward: int
    stages_diag: int  # loads in flight in the two diagonal-block passes
    stages_query: int = PIPELINE_STAGES  # loads in flight in the LLN query pass of the backward


def launch_plan(head_dim: int, v_dim: int) -> LaunchPlan:
    """The plan ``launch_config`` gives heads of this size (read at every call, so tuning applies at once)."""
    c = launch_config
    if max(head_dim, v_dim) > 64:
        wide = c.num_warps_wide
        # one stage: multi-buffered 128x128 tiles of the block passes need up to 416 KiB of shared memory
        rows = WIDE_ROW_BLOCK
        return LaunchPlan(rows, wide, wide, wide, rows, wide, wide, rows, wide, wide, stages_diag=1)
    return LaunchPlan(
        ROW_BLOCK,
        c.num_warps,
        c.num_warps_stats,
        c.num_warps_prologue,
        c.prologue_rows,
        c.num_warps_backward,
        c.num_warps_backward_unsplit,
        c.backward_unsplit_rows,
        c.num_warps_diag,
        c.num_warps_diag_backward,
        stages_diag=PIPELINE_STAGES,
        stages_query=c.num_stages_backward,
    )


@functools.cache
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _unsplit(batch_heads: int, device: torch.device) -> bool:
    """Whether one program per (batch, head) fills the GPU (``LaunchConfig.unsplit_programs_per_sm``)."""
    return batch_heads >= _sm_count(device) * launch_config.unsplit_programs_per_sm


def output_tiles(batch_heads: int, num_tiles: int, device: torch.device) -> int:
    """Row tiles per program of an output pass over ``num_tiles`` tiles: up to
    ``LaunchConfig.output_tiles_per_program`` where one program per (batch, head) fills the GPU, else one."""
    return min(num_tiles, launch_config.output_tiles_per_program) if _unsplit(batch_heads, device) else 1


def _split(batch_heads: int, num_tiles: int, device: torch.device) -> tuple[int, int]:
    """(tiles per program, programs per (batch, head)) for a pass that reduces over the sequence (see
    ``LaunchConfig.unsplit_programs_per_sm``); with one program per (batch, head) its sums are stored, with
    more they are added atomically into zero-filled buffers."""
    if _unsplit(batch_heads, device):
        return num_tiles, 1
    target = _sm_count(device) * launch_config.programs_per_sm
    per_program = min(num_tiles, max(1, (batch_heads * num_tiles) // target))
    return per_program, triton.cdiv(num_tiles, per_program)


def _bhs_strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride()[:3]


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _empty_like_layout(x: torch.Tensor, last: int) -> torch.Tensor:
    """Dense ``(batch, heads, seq, last)`` with x's leading dims in x's memory order (largest stride
    outermost), so an output or gradient of a ``(batch, seq, heads, dim)`` view, or of a slice of one, is
    such a view too: autograd then hands it on (and a leaf keeps it as ``.grad``) without a copy."""
    strides, sizes = x.stride(), x.shape
    order = sorted(range(3), key=lambda d: -strides[d])
    shape = (sizes[order[0]], sizes[order[1]], sizes[order[2]], last)
    return torch.empty(shape, dtype=x.dtype, device=x.device).permute(*[order.index(d) for d in range(3)], 3)


def key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The kernels' form of a ``(batch, seq)`` bool key padding mask: int32, dense, made once per call.

    A 4-byte entry lets Triton pipeline the mask's loads with the tiles' (``cp.async`` copies at least 4 bytes;
    a byte mask was loaded anew, and waited on, at every tile of every pass), and it is what the GPU computes
    right: with a byte mask, LLN + Diag with dropout in 16-wide register tiles gave wrong outputs and gradients
    on an H200 under Triton 3.6 (docs/kernels.md). One pass reads bytes instead (``_byte_mask``)."""
    if mask is None:
        return None
    return mask.to(dtype=torch.int32, memory_format=torch.contiguous_format)


def _byte_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A ``key_mask`` mask as uint8, for ``lln_backward_unsplit_kernel``: at the register limit already, it spilled
    more with the int32 mask's pipelined loads (112 bytes against 104 at head size 64, 8 against 0 at 128) and took
    0.907 ms a call with a mask (H200, bf16, 65,536 tokens at 512; docs/benchmark.md, sixth December run), against
    0.864 reading bytes (seventh run). It takes no dropout, whose block pass the byte mask computed wrongly."""
    return None if mask is None else mask.to(torch.uint8)


def _mask_args(mask: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(pointer argument, batch stride)`` of a mask in a form the kernels read (``key_mask``, ``_byte_mask``);
    ``like`` stands in for a missing one."""
    if mask is None:
        return like, 0
    return mask, mask.stride(0)


def _pooled_std(count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """Unbiased std from partial (count, mean, M2) along the last dim (Chan et al.), 0 for fewer than
    two elements, as ``hf_lln.ops.moments.token_std``."""
    total = count.sum(-1)
    grand = (count * mean).sum(-1) / total.clamp_min(1.0)
    m2 = m2.sum(-1) + (count * (mean - grand.unsqueeze(-1)) ** 2).sum(-1)
    return (m2 / (total - 1.0).clamp_min(1.0)).sqrt()


def feature_scales(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, *, stats: str, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One float32 buffer ``(batch * heads * (2 + head_dim),)`` holding alpha, beta: (batch * heads,) and the
    shift M_c: (batch * heads, head_dim), in that order (``split_scale_terms``).

    Statistics as ``hf_lln.ops.moments.query_key_std``: "per_sequence" over real tokens (finished by
    ``lln_scales_kernel``, one launch instead of some forty small host ops), "global" over the whole
    tensor, padding included (finished on the host); M_c is always over real keys.
    """
    batch, heads, seq, head_dim = q.shape
    plan = launch_plan(head_dim, head_dim)
    num_tiles = triton.cdiv(seq, plan.rows)
    per_program, chunks = _split(batch * heads, num_tiles, q.device)
    moments = torch.empty(batch * heads, chunks, 5, head_dim, dtype=torch.float32, device=q.device)
    k_max = torch.empty(batch * heads, chunks, head_dim, dtype=torch.float32, device=q.device)
    k_min = torch.empty_like(k_max)
    mask_arg, stride_mb = _mask_args(mask, q)
    launch(kernels.lln_stats_kernel, (chunks, batch * heads),
        q, k, mask_arg, moments, k_max, k_min,
        *_bhs_strides(q), *_bhs_strides(k), stride_mb,
        heads, seq, per_program, chunks,
        D=head_dim, BLOCK=plan.rows, HAS_MASK=mask is not None,
        MASKED_MOMENTS=stats == "per_sequence", num_warps=plan.warps_stats,
    )  # fmt: skip
    if stats == "per_sequence":
        a, b = moment_constants(head_dim)
        scale_terms = torch.empty(batch * heads * (2 + head_dim), dtype=torch.float32, device=q.device)
        alpha, beta, shift = split_scale_terms(scale_terms, batch * heads)
        launch(kernels.lln_scales_kernel, (batch * heads,),
            moments, k_max, k_min, alpha, beta, shift,
            chunks, head_dim * scale**2, a, b, MIN_STD,
            D=head_dim, num_warps=1,
        )  # fmt: skip
        return scale_terms
    pooled = moments.transpose(1, 2).reshape(batch * heads, 5, chunks * head_dim)
    pooled = pooled.transpose(0, 1).reshape(1, 5, -1)
    count, q_mean, q_m2, k_mean, k_m2 = pooled.unbind(1)
    q_std = _pooled_std(count, q_mean, q_m2).expand(batch, heads)
    k_std = _pooled_std(count, k_mean, k_m2).expand(batch, heads)
    alpha, beta = lln_feature_scales(q_std, k_std, head_dim, scale)
    alpha = alpha.reshape(-1).float().contiguous()
    beta = beta.reshape(-1).float().contiguous()
    shift = torch.maximum(beta[:, None] * k_max.amax(1), beta[:, None] * k_min.amin(1))
    # A sequence with no real key has no extremes; any finite shift does, its keys are all zero.
    shift = torch.where(shift.isfinite(), shift, torch.zeros_like(shift))
    return torch.cat([alpha, beta, shift.reshape(-1)])


def split_scale_terms(scale_terms: torch.Tensor, bh: int):
    """``alpha, beta, shift`` of ``feature_scales``'s buffer as the kernels take them: the buffer from each term's
    first element on (``alpha: (bh,)``, ``beta: (bh,)``, ``shift: (bh, head_dim)``, stored in that order). The
    kernels index them through pointers, so a slice each is enough: views of each term's shape would cost the
    host more tensor operations per call."""
    return scale_terms, scale_terms[bh:], scale_terms[2 * bh :]


def split_state(buffer: torch.Tensor, bh: int, head_dim: int, v_dim: int):
    """``state: (bh, head_dim, v_dim)`` and ``norm: (bh, head_dim)`` of ``_state``'s buffer, as
    ``split_scale_terms`` gives its terms: the buffer from each one's first element on."""
    return buffer, buffer[bh * head_dim * v_dim :]


def _state_buffer(bh: int, head_dim: int, v_dim: int, device: torch.device, *, atomic: bool) -> torch.Tensor:
    """A new ``_state`` buffer, zero-filled where several programs add into it (``atomic``)."""
    allocate = torch.zeros if atomic else torch.empty
    return allocate(bh * head_dim * (v_dim + 1), dtype=torch.float32, device=device)


def _state(k, v, mask, beta, shift, plan):
    batch, heads, seq, head_dim = k.shape
    v_dim = v.shape[-1]
    per_program, chunks = _split(batch * heads, triton.cdiv(seq, plan.rows), k.device)
    buffer = _state_buffer(batch * heads, head_dim, v_dim, k.device, atomic=chunks > 1)
    state, norm = split_state(buffer, batch * heads, head_dim, v_dim)
    mask_arg, stride_mb = _mask_args(mask, k)
    launch(kernels.lln_state_kernel, (chunks, batch * heads),
        k, v, mask_arg, beta, shift, state, norm,
        *_bhs_strides(k), *_bhs_strides(v), stride_mb,
        heads, seq, per_program,
        D=head_dim, DV=v_dim, BLOCK=plan.rows, HAS_MASK=mask is not None, HALF=k.dtype != torch.float32,
        ATOMIC=chunks > 1, num_warps=plan.warps,
    )  # fmt: skip
    return buffer


def _prologue(q, k, v, mask_arg, stride_mb, has_mask, scale, plan):
    """``(scale_terms, buffer)`` as ``feature_scales`` (per-sequence) and ``_state`` give them, from one
    ``lln_prologue_kernel`` launch; for calls that ``_split`` gives one program per (batch, head). ``mask_arg,
    stride_mb`` as ``_mask_args`` gives them: the caller's output pass reads the same."""
    batch, heads, seq, head_dim = q.shape
    v_dim = v.shape[-1]
    bh = batch * heads
    scale_terms = torch.empty(bh * (2 + head_dim), dtype=torch.float32, device=q.device)
    alpha, beta, shift = split_scale_terms(scale_terms, bh)
    buffer = _state_buffer(bh, head_dim, v_dim, q.device, atomic=False)
    state, norm = split_state(buffer, bh, head_dim, v_dim)
    a, b = moment_constants(head_dim)
    launch(kernels.lln_prologue_kernel, (bh,),
        q, k, v, mask_arg, alpha, beta, shift, state, norm,
        *_bhs_strides(q), *_bhs_strides(k), *_bhs_strides(v), stride_mb,
        heads, seq, triton.cdiv(seq, plan.rows_prologue), head_dim * scale**2, a, b, MIN_STD,
        D=head_dim, DV=v_dim, BLOCK=plan.rows_prologue, HAS_MASK=has_mask, HALF=q.dtype != torch.float32,
        num_warps=plan.warps_prologue,
    )  # fmt: skip
    return scale_terms, buffer


def block_backward_stages(plan: LaunchPlan, block: int) -> int:
    """Loads in flight in the block softmax's backward pass over diagonal blocks of ``block`` (power-of-two) rows:
    at most two past 64, where three stages take 224-232 KiB of shared memory (bf16, head size 64; the H100 has
    227) and spill all the same."""
    return plan.stages_diag if block <= 64 else min(plan.stages_diag, 2)


def _row_tile(block_size: int | None, plan: LaunchPlan) -> tuple[int, int]:
    """(rows per tile, its power-of-two register block): one diagonal block, or ``plan.rows`` rows for LLN."""
    tile = plan.rows if block_size is None else block_size
    return tile, register_block(tile)


# The passes run behind two entry points that share ``_lln_forward`` / ``_lln_backward``: in eager mode an
# autograd Function (the least host time per call, which matters at these kernel sizes), under torch.compile
# two custom operators joined by ``register_autograd``, opaque to the compiler, so a model's graph stays whole.
# Operators may not return views of one another, so the per-head scales travel as the flat buffer they are written
# into (``split_scale_terms``); the backward rebuilds the state rather than keep it (``_lln_backward``).


def _lln_forward(q, k, v, w_lln, w_diag, mask, seed, block_size, scale, eps, stats, dropout_p):
    batch, heads, seq, head_dim = q.shape
    v_dim = v.shape[-1]
    bh = batch * heads
    plan = launch_plan(head_dim, v_dim)
    _, chunks = _split(bh, triton.cdiv(seq, plan.rows), q.device)
    mask_arg, stride_mb = _mask_args(mask, q)
    has_mask = mask is not None
    if stats == "per_sequence" and chunks == 1:
        scale_terms, buffer = _prologue(q, k, v, mask_arg, stride_mb, has_mask, scale, plan)
        alpha, beta, shift = split_scale_terms(scale_terms, bh)
    else:
        scale_terms = feature_scales(q, k, mask, stats=stats, scale=scale)
        alpha, beta, shift = split_scale_terms(scale_terms, bh)
        buffer = _state(k, v, mask, beta, shift, plan)
    state, norm = split_state(buffer, bh, head_dim, v_dim)
    out = _empty_like_layout(q, v_dim)
    tile, block = _row_tile(block_size, plan)
    num_tiles = triton.cdiv(seq, tile)
    per_program = output_tiles(bh, num_tiles, q.device)
    has_diag = block_size is not None
    launch(kernels.lln_output_kernel, (triton.cdiv(num_tiles, per_program), batch * heads),
        q, k, v, mask_arg, out, alpha, shift, state, norm,
        alpha if w_lln is None else w_lln, alpha if w_diag is None else w_diag, alpha if seed is None else seed,
        *_bhs_strides(q), *_bhs_strides(k), *_bhs_strides(v), *_bhs_strides(out), stride_mb,
        heads, seq, tile, per_program, scale * 1.4426950408889634, eps, dropout_p,
        D=head_dim, DV=v_dim, BLOCK=block, HAS_MASK=has_mask, HAS_DIAG=has_diag,
        WEIGHTED=w_lln is not None, HALF=q.dtype != torch.float32, DROPOUT=seed is not None,
        num_warps=plan.warps_diag if has_diag else plan.warps,
        num_stages=plan.stages_diag if has_diag else PIPELINE_STAGES,
    )  # fmt: skip
    return out, scale_terms


def _lln_backward(grad, q, k, v, w_lln, w_diag, mask, seed, scale_terms, block_size, scale, eps, dropout_p):
    """Gradients from the forward's ``scale_terms``, with the state rebuilt from k, v: keeping the forward's
    ``bh * head_dim * (v_dim + 1)`` floats would weigh more than softmax keeps (a twelfth of q, k, v at 512 tokens,
    0.14 GiB of a base model's step), while rebuilding it is one pass over k, v. Where ``_split`` gives one
    program per (batch, head), the LLN part is one ``lln_backward_unsplit_kernel`` launch (state, query side and
    key side); else a state, a query and a key pass, whose programs add their sums atomically."""
    batch, heads, seq, head_dim = q.shape
    v_dim = v.shape[-1]
    bh = batch * heads
    alpha, beta, shift = split_scale_terms(scale_terms, bh)
    plan = launch_plan(head_dim, v_dim)
    has_diag, weighted, has_mask = block_size is not None, w_lln is not None, mask is not None
    grad = _unit_last_stride(grad)
    dq, dk, dv = (
        _empty_like_layout(q, head_dim),
        _empty_like_layout(k, head_dim),
        _empty_like_layout(v, v_dim),
    )
    num_tiles = triton.cdiv(seq, plan.rows)
    per_program, chunks = _split(bh, num_tiles, q.device)
    unsplit = chunks == 1
    # One zero-filled float32 buffer for dS, dz where several programs add into them (one program keeps them in
    # registers) and, for LLN + Diag's learnable mixes, d w_lln and d w_diag (summed over the batch, so always
    # atomically): none, and no fill, for one program per (batch, head) without mix weights.
    state_size = 0 if unsplit else bh * head_dim * (v_dim + 1)
    if weighted:
        scratch = torch.zeros(state_size + 2 * heads * v_dim, dtype=torch.float32, device=q.device)
        d_weights = scratch[state_size:].view(2, heads, v_dim)
        d_w_lln, d_w_diag = d_weights
    else:
        scratch = torch.zeros(state_size, dtype=torch.float32, device=q.device) if state_size else None
        d_weights = torch.empty(2, heads, 0, dtype=torch.float32, device=q.device)
        d_w_lln = d_w_diag = alpha  # unread placeholders (WEIGHTED off)
    mask_arg, stride_mb = _mask_args(mask, q)
    half = q.dtype != torch.float32
    if unsplit:
        byte_mask, byte_stride_mb = _mask_args(_byte_mask(mask), q)
        launch(kernels.lln_backward_unsplit_kernel, (bh,),
            q, k, v, byte_mask, grad, dq, dk, dv, alpha, beta, shift, w_lln if weighted else alpha, d_w_lln,
            *_bhs_strides(q), *_bhs_strides(k), *_bhs_strides(v), *_bhs_strides(grad),
            *_bhs_strides(dq), *_bhs_strides(dk), *_bhs_strides(dv), byte_stride_mb,
            heads, seq, triton.cdiv(seq, plan.rows_backward_unsplit), eps,
            D=head_dim, DV=v_dim, BLOCK=plan.rows_backward_unsplit, HAS_MASK=has_mask, HAS_DIAG=has_diag,
            WEIGHTED=weighted, HALF=half, num_warps=plan.warps_backward_unsplit, num_stages=plan.stages_query,
        )  # fmt: skip
    else:
        state, norm = split_state(_state(k, v, mask, beta, shift, plan), bh, head_dim, v_dim)
        d_state, d_norm = split_state(scratch[:state_size], bh, head_dim, v_dim)
        launch(kernels.lln_backward_query_kernel, (chunks, bh),
            q, grad, dq, alpha, shift, state, norm, w_lln if weighted else alpha,
            d_state, d_norm, d_w_lln,
            *_bhs_strides(q), *_bhs_strides(grad), *_bhs_strides(dq),
            heads, seq, per_program, eps,
            D=head_dim, DV=v_dim, BLOCK=plan.rows, HAS_DIAG=has_diag, WEIGHTED=weighted, HALF=half, ATOMIC=True,
            num_warps=plan.warps_query, num_stages=plan.stages_query,
        )  # fmt: skip
    if has_diag:
        tile, block = _row_tile(block_size, plan)
        per_program, chunks = _split(bh, triton.cdiv(seq, tile), q.device)
        launch(kernels.lln_backward_block_kernel, (chunks, bh),
            q, k, v, mask_arg, grad, dq, dk, dv, w_diag if weighted else alpha, d_w_diag,
            alpha if seed is None else seed,
            *_bhs_strides(q), *_bhs_strides(k), *_bhs_strides(v), *_bhs_strides(grad),
            *_bhs_strides(dq), *_bhs_strides(dk), *_bhs_strides(dv), stride_mb,
            heads, seq, tile, per_program, scale, dropout_p,
            D=head_dim, DV=v_dim, BLOCK=block, HAS_MASK=has_mask, WEIGHTED=weighted, HALF=half,
            DROPOUT=seed is not None, ADD_KEYS=unsplit,
            num_warps=plan.warps_diag_backward, num_stages=block_backward_stages(plan, block),
        )  # fmt: skip
    if not unsplit:
        launch(kernels.lln_backward_key_kernel, (num_tiles, bh),
            k, v, mask_arg, dk, dv, beta, shift, d_state, d_norm,
            *_bhs_strides(k), *_bhs_strides(v), *_bhs_strides(dk), *_bhs_strides(dv), stride_mb,
            heads, seq,
            D=head_dim, DV=v_dim, BLOCK=plan.rows, HAS_MASK=has_mask, ACCUMULATE=has_diag, HALF=half,
            num_warps=plan.warps,
        )  # fmt: skip
    return dq, dk, dv, d_weights


Tensor = torch.Tensor


@torch.library.custom_op("hf_lln::fused_lln_forward", mutates_args=())
def _lln_forward_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    w_lln: Tensor | None,
    w_diag: Tensor | None,
    mask: Tensor | None,
    seed: Tensor | None,
    block_size: int | None,
    scale: float,
    eps: float,
    stats: str,
    dropout_p: float,
) -> tuple[Tensor, Tensor]:
    return _lln_forward(q, k, v, w_lln, w_diag, mask, seed, block_size, scale, eps, stats, dropout_p)


@_lln_forward_op.register_fake
def _(q, k, v, w_lln, w_diag, mask, seed, block_size, scale, eps, stats, dropout_p):
    bh, head_dim, v_dim = q.shape[0] * q.shape[1], q.shape[-1], v.shape[-1]
    floats = {"dtype": torch.float32, "device": q.device}
    return _empty_like_layout(q, v_dim), torch.empty(bh * (2 + head_dim), **floats)


@torch.library.custom_op("hf_lln::fused_lln_backward", mutates_args=())
def _lln_backward_op(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    w_lln: Tensor | None,
    w_diag: Tensor | None,
    mask: Tensor | None,
    seed: Tensor | None,
    scale_terms: Tensor,
    block_size: int | None,
    scale: float,
    eps: float,
    dropout_p: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dq, dk, dv, d_weights)``; ``d_weights: (2, heads, v_dim)`` holds d w_lln and d w_diag (LLN + Diag with
    mix weights), or is empty (LLN, and the average mix)."""
    return _lln_backward(
        grad, q, k, v, w_lln, w_diag, mask, seed, scale_terms, block_size, scale, eps, dropout_p
    )


@_lln_backward_op.register_fake
def _(grad, q, k, v, w_lln, w_diag, mask, seed, scale_terms, block_size, scale, eps, dropout_p):
    weights = (2, q.shape[1], v.shape[-1] if w_lln is not None else 0)
    return (
        _empty_like_layout(q, q.shape[-1]),
        _empty_like_layout(k, k.shape[-1]),
        _empty_like_layout(v, v.shape[-1]),
        torch.empty(weights, dtype=torch.float32, device=q.device),
    )


def _lln_setup_context(ctx, inputs, output):
    q, k, v, w_lln, w_diag, mask, seed, block_size, scale, eps, _, dropout_p = inputs
    ctx.save_for_backward(q, k, v, w_lln, w_diag, mask, seed, output[1])
    ctx.config = (block_size, scale, eps, dropout_p)


def _weight_grads(w_lln: Tensor | None, d_weights: Tensor) -> tuple:
    """The gradients of ``w_lln, w_diag`` from the backward's ``d_weights``: None where no weights were given."""
    return tuple(d_weights) if w_lln is not None else (None, None)


def _lln_grads(ctx, grad, _scale_terms_grad):
    block_size, scale, eps, dropout_p = ctx.config
    saved = ctx.saved_tensors  # read once: activation checkpointing unpacks each saved tensor only once
    dq, dk, dv, d_weights = torch.ops.hf_lln.fused_lln_backward(
        grad, *saved, block_size, scale, eps, dropout_p
    )
    weight_grads = _weight_grads(saved[3], d_weights)
    return dq, dk, dv, *weight_grads, None, None, None, None, None, None, None


_lln_forward_op.register_autograd(_lln_grads, setup_context=_lln_setup_context)


class _FusedLLN(torch.autograd.Function):
    """The eager entry point: the same passes as the custom operators, without their dispatch overhead."""

    @staticmethod
    def forward(ctx, q, k, v, w_lln, w_diag, mask, seed, block_size, scale, eps, stats, dropout_p):
        out, scale_terms = _lln_forward(
            q, k, v, w_lln, w_diag, mask, seed, block_size, scale, eps, stats, dropout_p
        )
        ctx.save_for_backward(q, k, v, w_lln, w_diag, mask, seed, scale_terms)
        ctx.config = (block_size, scale, eps, dropout_p)
        return out

    @staticmethod
    def backward(ctx, grad):
        block_size, scale, eps, dropout_p = ctx.config
        saved = ctx.saved_tensors  # read once: activation checkpointing unpacks each saved tensor only once
        dq, dk, dv, d_weights = _lln_backward(grad, *saved, block_size, scale, eps, dropout_p)
        weight_grads = _weight_grads(saved[3], d_weights)
        return dq, dk, dv, *weight_grads, None, None, None, None, None, None, None


def fused_lln(q, k, v, mask, w_lln, w_diag, *, block_size, scale, eps, stats, dropout_p=0.0):
    """Run the fused operator (differentiable); inputs already validated, ``w_*: (heads, v_dim)`` float32 or None.

    ``dropout_p`` (LLN + Diag only) drops block-softmax probabilities with a seed drawn from torch's
    generator for q's device (``dropout.draw_seed``), none drawn when it is 0."""
    q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
    seed = draw_seed(q.device) if dropout_p > 0.0 else None
    arguments = (
        q,
        k,
        v,
        w_lln,
        w_diag,
        key_mask(mask),
        seed,
        block_size,
        float(scale),
        float(eps),
        stats,
        float(dropout_p),
    )
    if torch.compiler.is_compiling():
        return torch.ops.hf_lln.fused_lln_forward(*arguments)[0]
    return _FusedLLN.apply(*arguments)
