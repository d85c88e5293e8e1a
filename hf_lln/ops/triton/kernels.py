"""Triton kernels for non-causal LLN and LLN + block-diagonal softmax (forward and backward).

Layout shared by every kernel: ``q, k: (batch, heads, seq, head_dim)``, ``v, out: (batch, heads, seq,
v_dim)`` addressed through their batch / head / seq strides (the last stride must be 1), so the
``(batch, seq, heads, dim)`` views that Transformers hands over need no copy. The grid's axis 1 is
``batch * heads``; axis 0 walks the sequence, each program taking ``tiles_per_program`` consecutive
tiles of ``tile`` rows (a tile is one diagonal block for LLN + Diag). Per-head state lives in small
float32 buffers indexed by ``batch * heads``: ``alpha, beta: (bh,)``, ``shift: (bh, head_dim)``
(``M_c``), ``state: (bh, head_dim, v_dim)`` (``S``), ``norm: (bh, head_dim)`` (``z``). The key padding mask
``MASK: (batch, seq)`` is int32 (uint8 in ``lln_backward_unsplit_kernel``), nonzero for a real token, addressed
through its batch stride (``functions.key_mask``).

Everything is accumulated in float32; ``HALF`` marks bf16/fp16 inputs, for which the LLN state
products run as tf32 and the block softmax's products on operands in the input dtype, like
FlashAttention; float32 inputs get 3xtf32 products (float32 accuracy on the tensor cores).

Attention dropout (``DROPOUT``) acts on the block softmax's probabilities. Its keep mask is never
stored: ``_dropout_keep`` draws it from a counter-based generator (Philox, ``tl.rand4x``) keyed by the
call's seed and the (batch, head) and counted by (query row, key column), so the backward pass and
``dropout_keep_kernel`` regenerate exactly the forward's mask, as FlashAttention does.
"""

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, HALF: tl.constexpr):
    """float32 product for the LLN state: tf32 for half inputs, 3xtf32 (float32 accuracy) for float32."""
    if HALF:
        out = tl.dot(a, b, input_precision="tf32")
    else:
        out = tl.dot(a, b, input_precision="tf32x3")
    return out


@triton.jit
def _dot_in(a, b, like, HALF: tl.constexpr):
    """Block-softmax product with operands rounded to ``like``'s (the input) dtype, as FlashAttention does."""
    if HALF:
        out = tl.dot(a.to(like.dtype), b.to(like.dtype))
    else:
        out = tl.dot(a, b, input_precision="tf32x3")
    return out


@triton.jit
def _load_rows(ptr, rows, row_ok, cols, stride_s):
    return tl.load(ptr + rows[:, None] * stride_s + cols[None, :], mask=row_ok[:, None], other=0.0)


@triton.jit
def _key_ok(mask_ptr, rows, row_ok, HAS_MASK: tl.constexpr):
    ok = row_ok
    if HAS_MASK:
        ok = row_ok & (tl.load(mask_ptr + rows, mask=row_ok, other=0) != 0)
    return ok


@triton.jit
def _dropout_keep(seed, pid_bh, rows, dropout_p, BLOCK: tl.constexpr):
    """Keep mask ``(BLOCK, BLOCK)`` of one diagonal block: query ``rows`` (sequence positions) by key column
    within the block. One Philox stream per (batch, head), keyed by ``seed + pid_bh`` (a 64-bit key); each
    Philox call gives four numbers (``tl.rand4x``), so a row's ``BLOCK`` columns take ``BLOCK / 4`` counters,
    ``row * BLOCK / 4 + column / 4``: a quarter of the generator's work of one call per probability, which made
    dropout cost the forward's output pass half its time. The counters are unique within a stream, and int32
    for ``seq * BLOCK / 4 < 2**31`` (``unsupported_reason`` checks it), so that every Triton version runs the
    32-bit Philox (some switch to a 64-bit variant for int64 counters). Kept with probability
    ``1 - dropout_p``, as ``torch.nn.functional.dropout``."""
    quarter: tl.constexpr = BLOCK // 4
    offsets = rows[:, None] * quarter + tl.arange(0, quarter)[None, :]
    u0, u1, u2, u3 = tl.rand4x(seed + pid_bh, offsets)
    # (BLOCK, BLOCK / 4, 2, 2) -> (BLOCK, BLOCK): column 4 c + 2 m + n holds number m + 2 n of counter c
    return tl.reshape(tl.join(tl.join(u0, u1), tl.join(u2, u3)), (BLOCK, BLOCK)) >= dropout_p


@triton.jit
def _dropped(x, keep, dropout_p):
    """``x`` where kept, scaled by ``1 / (1 - dropout_p)``; 0 where dropped."""
    return tl.where(keep, x * (1.0 / (1.0 - dropout_p)), 0.0)


@triton.jit
def dropout_keep_kernel(SEED, KEEP, seq, tile, dropout_p, BLOCK: tl.constexpr):
    """The keep mask the block passes draw, for tests: ``KEEP: (bh, seq, tile)`` uint8, entry
    ``[bh, i, j]`` for query ``i`` and key ``(i // tile) * tile + j``. Grid: (blocks, bh)."""
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    local = tl.arange(0, BLOCK)
    rows = pid_t * tile + local
    row_ok = (local < tile) & (rows < seq)
    keep = _dropout_keep(tl.load(SEED), pid_bh, rows, dropout_p, BLOCK)
    ptr = KEEP + pid_bh * seq * tile + rows[:, None] * tile + local[None, :]
    tl.store(ptr, keep.to(tl.uint8), mask=row_ok[:, None] & (local[None, :] < tile))


@triton.jit
def _reduce_out(ptr, value, ATOMIC: tl.constexpr):
    """A program's part of a sum over the sequence: added atomically when several programs share one
    (batch, head) (``ptr`` zero-filled), stored when one program covers the whole sequence."""
    if ATOMIC:
        tl.atomic_add(ptr, value)
    else:
        tl.store(ptr, value)


@triton.jit
def _moment_tiles(
    q_base, k_base, mask_base, stride_qs, stride_ks, seq, first, num_tiles,
    D: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, MASKED_MOMENTS: tl.constexpr,
):  # fmt: skip
    """Per-channel (count, q mean, q M2, k mean, k M2) over ``num_tiles`` tiles from tile ``first``, over real
    tokens with ``MASKED_MOMENTS``, else over all, and the extremes of k over real tokens (k max, k min): ``(D,)``
    each.

    The loop only adds, element-wise, into per-row-slot ``(BLOCK, D)`` sums of each value's deviation from a
    reference and of its square, an add and a multiply-add where a Welford update takes a division; the slots are
    merged once, after it. The reference is each channel's mean over the first tile's rows, a value within the
    data, so the sum-of-squares form does not cancel (Chan, Golub and LeVeque's shifted data)."""
    cols = tl.arange(0, D)
    rows = first * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < seq
    in_tile = tl.maximum(tl.sum(row_ok.to(tl.float32), axis=0), 1.0)
    q_ref = tl.sum(_load_rows(q_base, rows, row_ok, cols, stride_qs).to(tl.float32), axis=0) / in_tile
    k_ref = tl.sum(_load_rows(k_base, rows, row_ok, cols, stride_ks).to(tl.float32), axis=0) / in_tile
    n = tl.zeros([BLOCK], tl.float32)
    q_sum = tl.zeros([BLOCK, D], tl.float32)
    q_sq = tl.zeros([BLOCK, D], tl.float32)
    k_sum = tl.zeros([BLOCK, D], tl.float32)
    k_sq = tl.zeros([BLOCK, D], tl.float32)
    k_max = tl.full([BLOCK, D], float("-inf"), tl.float32)
    k_min = tl.full([BLOCK, D], float("inf"), tl.float32)
    # Pipelined by request: Triton pipelines on its own only loads that feed a dot, and this loop has none.
    for i in tl.range(num_tiles, num_stages=3):
        rows = (first + i) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < seq
        key_ok = _key_ok(mask_base, rows, row_ok, HAS_MASK)
        ok = key_ok if MASKED_MOMENTS else row_ok
        q = _load_rows(q_base, rows, row_ok, cols, stride_qs).to(tl.float32)
        k = _load_rows(k_base, rows, row_ok, cols, stride_ks).to(tl.float32)
        dq = tl.where(ok[:, None], q - q_ref[None, :], 0.0)
        dk = tl.where(ok[:, None], k - k_ref[None, :], 0.0)
        n += ok.to(tl.float32)
        q_sum += dq
        q_sq += dq * dq
        k_sum += dk
        k_sq += dk * dk
        k_max = tl.maximum(k_max, tl.where(key_ok[:, None], k, float("-inf")))
        k_min = tl.minimum(k_min, tl.where(key_ok[:, None], k, float("inf")))
    count = tl.sum(n, axis=0)
    inv = 1.0 / tl.maximum(count, 1.0)
    q_total = tl.sum(q_sum, axis=0)
    k_total = tl.sum(k_sum, axis=0)
    q_m2 = tl.maximum(tl.sum(q_sq, axis=0) - q_total * q_total * inv, 0.0)
    k_m2 = tl.maximum(tl.sum(k_sq, axis=0) - k_total * k_total * inv, 0.0)
    counts = tl.zeros([D], tl.float32) + count
    q_mean = q_ref + q_total * inv
    k_mean = k_ref + k_total * inv
    return counts, q_mean, q_m2, k_mean, k_m2, tl.max(k_max, axis=0), tl.min(k_min, axis=0)


@triton.jit
def _matched_scales(
    count, q_mean, q_m2, k_mean, k_m2, k_max, k_min, softmax_factor, const_a, const_b, min_std
):
    """alpha, beta (scalars) and the shift ``M_c: (D,)`` of one (batch, head) from per-channel (count, mean,
    M2) of q and k and the per-channel extremes of k (``(D,)`` each).

    Merges the channels (Chan et al.) into unbiased stds floored at ``min_std``, then applies
    ``hf_lln.ops.moments.lln_feature_scales`` (``softmax_factor = head_dim * scale**2``; the tests hold the
    two to the same numbers): ``s~ = sqrt(max(0, (s_q^2 s_k^2 factor - b) / 2a))``, ``alpha = s~ / s_q``,
    ``beta = s~ / s_k``; ``M_c = max(beta k_max_c, beta k_min_c)``, 0 when the sequence has no real key.
    """
    total = tl.sum(count, axis=0)
    q_grand = tl.sum(count * q_mean, axis=0) / tl.maximum(total, 1.0)
    k_grand = tl.sum(count * k_mean, axis=0) / tl.maximum(total, 1.0)
    dq = q_mean - q_grand
    dk = k_mean - k_grand
    denom = tl.maximum(total - 1.0, 1.0)
    q_std = tl.maximum(tl.sqrt(tl.sum(q_m2 + count * dq * dq, axis=0) / denom), min_std)
    k_std = tl.maximum(tl.sqrt(tl.sum(k_m2 + count * dk * dk, axis=0) / denom), min_std)
    softmax_variance = q_std * q_std * k_std * k_std * softmax_factor
    matched = tl.sqrt(tl.maximum((softmax_variance - const_b) / (2.0 * const_a), 0.0))
    alpha = matched / q_std
    beta = matched / k_std
    shift = tl.maximum(beta * k_max, beta * k_min)
    shift = tl.where(tl.abs(shift) < float("inf"), shift, 0.0)
    return alpha, beta, shift


@triton.jit
def _state_tiles(
    k_base, v_base, mask_base, beta, shift, stride_ks, stride_vs, seq, first, num_tiles,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """``(sum_j phi_k_j v_j^T: (D, DV), sum_j phi_k_j: (D,))`` over ``num_tiles`` tiles from tile ``first``."""
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    state = tl.zeros([D, DV], tl.float32)
    norm = tl.zeros([BLOCK, D], tl.float32)  # per row slot: summed over rows once, after the loop
    for i in range(num_tiles):
        rows = (first + i) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < seq
        ok = _key_ok(mask_base, rows, row_ok, HAS_MASK)
        k = _load_rows(k_base, rows, row_ok, cols, stride_ks).to(tl.float32)
        v = _load_rows(v_base, rows, row_ok, vcols, stride_vs).to(tl.float32)
        phi = tl.where(ok[:, None], tl.exp(beta * k - shift[None, :]), 0.0)
        state += _dot(tl.trans(phi), v, HALF)
        norm += phi
    return state, tl.sum(norm, axis=0)


@triton.jit
def lln_stats_kernel(
    Q, K, MASK, MOMENTS, KMAX, KMIN,
    stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks, stride_mb,
    heads, seq, tiles_per_program, num_chunks,
    D: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, MASKED_MOMENTS: tl.constexpr,
):  # fmt: skip
    """Per-channel moments of q and k (over real tokens with ``MASKED_MOMENTS``, else over all) and
    per-channel extremes of k over real tokens, per chunk (``_moment_tiles``).

    Writes ``MOMENTS: (bh, num_chunks, 5, D)`` = (count, q mean, q M2, k mean, k M2) and
    ``KMAX, KMIN: (bh, num_chunks, D)``; ``lln_scales_kernel`` or the host merges the chunks.
    """
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    cols = tl.arange(0, D)
    count, q_mean, q_m2, k_mean, k_m2, k_max, k_min = _moment_tiles(
        Q + b * stride_qb + h * stride_qh, K + b * stride_kb + h * stride_kh, MASK + b * stride_mb,
        stride_qs, stride_ks, seq, pid_c * tiles_per_program, tiles_per_program,
        D, BLOCK, HAS_MASK, MASKED_MOMENTS,
    )  # fmt: skip
    chunk = pid_bh * num_chunks + pid_c
    out = MOMENTS + chunk * 5 * D + cols
    tl.store(out, count)
    tl.store(out + D, q_mean)
    tl.store(out + 2 * D, q_m2)
    tl.store(out + 3 * D, k_mean)
    tl.store(out + 4 * D, k_m2)
    tl.store(KMAX + chunk * D + cols, k_max)
    tl.store(KMIN + chunk * D + cols, k_min)


@triton.jit
def lln_scales_kernel(
    MOMENTS, KMAX, KMIN, ALPHA, BETA, SHIFT,
    num_chunks, softmax_factor, const_a, const_b, min_std,
    D: tl.constexpr,
):  # fmt: skip
    """Per-sequence alpha, beta and shift of one (batch, head) from the statistics kernel's partials: the
    chunks merged per channel (Chan et al.), then ``_matched_scales``."""
    pid = tl.program_id(0)
    cols = tl.arange(0, D)
    count = tl.zeros([D], tl.float32)
    q_sum = tl.zeros([D], tl.float32)
    k_sum = tl.zeros([D], tl.float32)
    k_max = tl.full([D], float("-inf"), tl.float32)
    k_min = tl.full([D], float("inf"), tl.float32)
    for c in range(num_chunks):
        base = MOMENTS + (pid * num_chunks + c) * 5 * D + cols
        n = tl.load(base)
        count += n
        q_sum += n * tl.load(base + D)
        k_sum += n * tl.load(base + 3 * D)
        k_max = tl.maximum(k_max, tl.load(KMAX + (pid * num_chunks + c) * D + cols))
        k_min = tl.minimum(k_min, tl.load(KMIN + (pid * num_chunks + c) * D + cols))
    q_mean = q_sum / tl.maximum(count, 1.0)
    k_mean = k_sum / tl.maximum(count, 1.0)
    q_m2 = tl.zeros([D], tl.float32)
    k_m2 = tl.zeros([D], tl.float32)
    for c in range(num_chunks):
        base = MOMENTS + (pid * num_chunks + c) * 5 * D + cols
        n = tl.load(base)
        dq = tl.load(base + D) - q_mean
        dk = tl.load(base + 3 * D) - k_mean
        q_m2 += tl.load(base + 2 * D) + n * dq * dq
        k_m2 += tl.load(base + 4 * D) + n * dk * dk
    alpha, beta, shift = _matched_scales(
        count, q_mean, q_m2, k_mean, k_m2, k_max, k_min, softmax_factor, const_a, const_b, min_std
    )
    tl.store(ALPHA + pid, alpha)
    tl.store(BETA + pid, beta)
    tl.store(SHIFT + pid * D + cols, shift)


@triton.jit
def lln_prologue_kernel(
    Q, K, V, MASK, ALPHA, BETA, SHIFT, STATE, NORM,
    stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs, stride_mb,
    heads, seq, num_tiles, softmax_factor, const_a, const_b, min_std,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """The statistics, scales and state passes of per-sequence LLN in one program per (batch, head), for
    calls whose (batch, head) count alone fills the GPU: one launch instead of three, no partials, no
    zero-filled state, and the second read of k comes from L2. Grid: (bh,)."""
    pid_bh = tl.program_id(0)
    b = pid_bh // heads
    h = pid_bh % heads
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    mask_base = MASK + b * stride_mb
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    count, q_mean, q_m2, k_mean, k_m2, k_max, k_min = _moment_tiles(
        q_base, k_base, mask_base, stride_qs, stride_ks, seq, 0, num_tiles, D, BLOCK, HAS_MASK, True
    )
    alpha, beta, shift = _matched_scales(
        count, q_mean, q_m2, k_mean, k_m2, k_max, k_min, softmax_factor, const_a, const_b, min_std
    )
    tl.store(ALPHA + pid_bh, alpha)
    tl.store(BETA + pid_bh, beta)
    tl.store(SHIFT + pid_bh * D + cols, shift)
    state, norm = _state_tiles(
        k_base, V + b * stride_vb + h * stride_vh, mask_base, beta, shift, stride_ks, stride_vs, seq, 0,
        num_tiles, D, DV, BLOCK, HAS_MASK, HALF,
    )  # fmt: skip
    tl.store(STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :], state)
    tl.store(NORM + pid_bh * D + cols, norm)


@triton.jit
def lln_state_kernel(
    K, V, MASK, BETA, SHIFT, STATE, NORM,
    stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs, stride_mb,
    heads, seq, tiles_per_program,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HALF: tl.constexpr,
    ATOMIC: tl.constexpr,
):  # fmt: skip
    """``S += sum_j phi_k_j v_j^T`` and ``z += sum_j phi_k_j`` over this program's tiles (``_reduce_out``)."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    state, norm = _state_tiles(
        K + b * stride_kb + h * stride_kh, V + b * stride_vb + h * stride_vh, MASK + b * stride_mb,
        tl.load(BETA + pid_bh), tl.load(SHIFT + pid_bh * D + cols), stride_ks, stride_vs, seq,
        pid_c * tiles_per_program, tiles_per_program, D, DV, BLOCK, HAS_MASK, HALF,
    )  # fmt: skip
    _reduce_out(STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :], state, ATOMIC)
    _reduce_out(NORM + pid_bh * D + cols, norm, ATOMIC)


@triton.jit
def _lln_rows(q, alpha, shift, state, norm, eps, HALF: tl.constexpr):
    """LLN for a tile of query rows: (phi_q, normaliser, clamped normaliser, output)."""
    a = alpha * q + shift[None, :]
    phi = tl.exp(a - tl.max(a, axis=1)[:, None])
    den = tl.sum(phi * norm[None, :], axis=1)
    den_c = tl.maximum(den, eps)
    return phi, den, den_c, _dot(phi, state, HALF) / den_c[:, None]


@triton.jit
def _block_softmax(q, k, key_ok, scale_log2e, HALF: tl.constexpr):
    """Softmax probabilities of a diagonal block; a row with no real key is all zeros."""
    s = _dot_in(q, tl.trans(k), q, HALF) * scale_log2e
    s = tl.where(key_ok[None, :], s, float("-inf"))
    row_max = tl.max(s, axis=1)
    row_max = tl.where(row_max == float("-inf"), 0.0, row_max)
    p = tl.exp2(s - row_max[:, None])
    total = tl.sum(p, axis=1)
    return p * (1.0 / tl.where(total > 0.0, total, 1.0))[:, None]


@triton.jit
def lln_output_kernel(
    Q, K, V, MASK, OUT, ALPHA, SHIFT, STATE, NORM, W_LLN, W_DIAG, SEED,
    stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os, stride_mb,
    heads, seq, tile, tiles_per_program, scale_log2e, eps, dropout_p,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_DIAG: tl.constexpr, WEIGHTED: tl.constexpr, HALF: tl.constexpr,
    DROPOUT: tl.constexpr,
):  # fmt: skip
    """``out = w_lln * LLN(q) + w_diag * block softmax`` (just LLN without ``HAS_DIAG``); without ``WEIGHTED``
    both weights are 0.5 (the average mix) and ``W_LLN, W_DIAG`` are not read.

    A tile holds ``tile <= BLOCK`` rows: with ``HAS_DIAG`` one diagonal block, so its keys are its rows.
    ``DROPOUT`` drops the block softmax's probabilities (``SEED: (1,)`` int64, see ``_dropout_keep``).
    """
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    o_base = OUT + b * stride_ob + h * stride_oh
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    alpha = tl.load(ALPHA + pid_bh)
    shift = tl.load(SHIFT + pid_bh * D + cols)
    state = tl.load(STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :])
    norm = tl.load(NORM + pid_bh * D + cols)
    if HAS_DIAG and WEIGHTED:
        w_lln = tl.load(W_LLN + h * DV + vcols)
        w_diag = tl.load(W_DIAG + h * DV + vcols)
    if DROPOUT:
        seed = tl.load(SEED)
    first = pid_c * tiles_per_program
    for i in range(tiles_per_program):
        t = first + i
        local = tl.arange(0, BLOCK)
        rows = t * tile + local
        row_ok = (local < tile) & (rows < seq)
        q_in = _load_rows(q_base, rows, row_ok, cols, stride_qs)
        _, _, _, out = _lln_rows(q_in.to(tl.float32), alpha, shift, state, norm, eps, HALF)
        if HAS_DIAG:
            k_in = _load_rows(k_base, rows, row_ok, cols, stride_ks)
            v_in = _load_rows(v_base, rows, row_ok, vcols, stride_vs)
            key_ok = _key_ok(MASK + b * stride_mb, rows, row_ok, HAS_MASK)
            p = _block_softmax(q_in, k_in, key_ok, scale_log2e, HALF)
            if DROPOUT:
                p = _dropped(p, _dropout_keep(seed, pid_bh, rows, dropout_p, BLOCK), dropout_p)
            diag = _dot_in(p, v_in, v_in, HALF)
            if WEIGHTED:
                out = w_lln[None, :] * out + w_diag[None, :] * diag
            else:
                out = 0.5 * (out + diag)
        o_ptr = o_base + rows[:, None] * stride_os + vcols[None, :]
        tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _query_tiles(
    q_base, g_base, dq_base, stride_qs, stride_gs, stride_dqs, alpha, shift, state, norm, w_lln, seq, first,
    num_tiles, eps,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_DIAG: tl.constexpr, WEIGHTED: tl.constexpr,
    HALF: tl.constexpr,
):  # fmt: skip
    """The LLN query side of the backward over ``num_tiles`` row tiles from tile ``first``: stores their ``dq``
    and returns their sums ``(dS: (D, DV), dz: (D,), d w_lln: (DV,))``. With ``HAS_DIAG`` the incoming gradient
    is scaled by ``w_lln`` first (0.5 without ``WEIGHTED``, and d w_lln stays zero)."""
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    d_state = tl.zeros([D, DV], tl.float32)
    d_norm = tl.zeros([D], tl.float32)
    d_w_lln = tl.zeros([DV], tl.float32)
    for i in range(num_tiles):
        rows = (first + i) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < seq
        q = _load_rows(q_base, rows, row_ok, cols, stride_qs).to(tl.float32)
        g = _load_rows(g_base, rows, row_ok, vcols, stride_gs).to(tl.float32)
        phi, den, den_c, lln = _lln_rows(q, alpha, shift, state, norm, eps, HALF)
        if HAS_DIAG:
            if WEIGHTED:
                d_w_lln += tl.sum(g * lln, axis=0)
                g = g * w_lln[None, :]
            else:
                g = g * 0.5
        u = g / den_c[:, None]
        w = tl.where(den > eps, tl.sum(u * lln, axis=1), 0.0)
        d_phi = _dot(u, tl.trans(state), HALF) - w[:, None] * norm[None, :]
        d_state += _dot(tl.trans(phi), u, HALF)
        d_norm -= tl.sum(w[:, None] * phi, axis=0)
        tl.store(
            dq_base + rows[:, None] * stride_dqs + cols[None, :],
            (d_phi * phi * alpha).to(dq_base.dtype.element_ty),
            mask=row_ok[:, None],
        )
    return d_state, d_norm, d_w_lln


@triton.jit
def lln_backward_query_kernel(
    Q, GRAD, DQ, ALPHA, SHIFT, STATE, NORM, W_LLN, D_STATE, D_NORM, D_W_LLN,
    stride_qb, stride_qh, stride_qs, stride_gb, stride_gh, stride_gs, stride_dqb, stride_dqh, stride_dqs,
    heads, seq, tiles_per_program, eps,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_DIAG: tl.constexpr, WEIGHTED: tl.constexpr,
    HALF: tl.constexpr, ATOMIC: tl.constexpr,
):  # fmt: skip
    """Query side of the LLN backward (``_query_tiles``) over this program's tiles: ``dq`` (stored), ``dS, dz``
    (``_reduce_out``), ``d w_lln`` with ``HAS_DIAG`` and ``WEIGHTED`` (atomic); the block softmax's part is
    ``lln_backward_block_kernel``'s."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    alpha = tl.load(ALPHA + pid_bh)
    shift = tl.load(SHIFT + pid_bh * D + cols)
    state = tl.load(STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :])
    norm = tl.load(NORM + pid_bh * D + cols)
    w_lln = alpha
    if HAS_DIAG and WEIGHTED:
        w_lln = tl.load(W_LLN + h * DV + vcols)
    d_state, d_norm, d_w_lln = _query_tiles(
        Q + b * stride_qb + h * stride_qh, GRAD + b * stride_gb + h * stride_gh, DQ + b * stride_dqb + h * stride_dqh,
        stride_qs, stride_gs, stride_dqs, alpha, shift, state, norm, w_lln, seq, pid_c * tiles_per_program,
        tiles_per_program, eps, D, DV, BLOCK, HAS_DIAG, WEIGHTED, HALF,
    )  # fmt: skip
    _reduce_out(D_STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :], d_state, ATOMIC)
    _reduce_out(D_NORM + pid_bh * D + cols, d_norm, ATOMIC)
    if HAS_DIAG and WEIGHTED:
        tl.atomic_add(D_W_LLN + h * DV + vcols, d_w_lln)


@triton.jit
def lln_backward_block_kernel(
    Q, K, V, MASK, GRAD, DQ, DK, DVAL, W_DIAG, D_W_DIAG, SEED,
    stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs, stride_gb, stride_gh, stride_gs,
    stride_dqb, stride_dqh, stride_dqs, stride_dkb, stride_dkh, stride_dks,
    stride_dvb, stride_dvh, stride_dvs, stride_mb,
    heads, seq, tile, tiles_per_program, scale, dropout_p,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, WEIGHTED: tl.constexpr,
    HALF: tl.constexpr, DROPOUT: tl.constexpr, ADD_KEYS: tl.constexpr,
):  # fmt: skip
    """Block-diagonal softmax part of the backward, one diagonal block (``tile <= BLOCK`` rows) per
    tile: adds its ``dq`` to ``DQ`` (which holds the LLN part), stores its ``dk, dv`` (the key kernel
    adds the LLN part), or with ``ADD_KEYS`` adds them to the LLN part already there
    (``lln_backward_unsplit_kernel`` ran first), and, with ``WEIGHTED``, accumulates ``d w_diag`` (atomic;
    without it the weight is 0.5). A separate pass keeps the LLN passes and this one each within the register
    file.

    With ``DROPOUT`` the forward's keep mask M is drawn again (``_dropout_keep``); with the dropped
    probabilities P' = P * M / (1 - p): ``dv = P'^T g``, ``dP = (g v^T) * M / (1 - p)`` and
    ``dS = P * (dP - rowsum(g * P' v))``."""
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    g_base = GRAD + b * stride_gb + h * stride_gh
    dq_base = DQ + b * stride_dqb + h * stride_dqh
    dk_base = DK + b * stride_dkb + h * stride_dkh
    dv_base = DVAL + b * stride_dvb + h * stride_dvh
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    if WEIGHTED:
        w_diag = tl.load(W_DIAG + h * DV + vcols)
        d_w_diag = tl.zeros([DV], tl.float32)
    scale_log2e = scale * 1.4426950408889634
    if DROPOUT:
        seed = tl.load(SEED)
    first = pid_c * tiles_per_program
    for i in range(tiles_per_program):
        local = tl.arange(0, BLOCK)
        rows = (first + i) * tile + local
        row_ok = (local < tile) & (rows < seq)
        q_in = _load_rows(q_base, rows, row_ok, cols, stride_qs)
        k_in = _load_rows(k_base, rows, row_ok, cols, stride_ks)
        v_in = _load_rows(v_base, rows, row_ok, vcols, stride_vs)
        g = _load_rows(g_base, rows, row_ok, vcols, stride_gs).to(tl.float32)
        key_ok = _key_ok(MASK + b * stride_mb, rows, row_ok, HAS_MASK)
        p = _block_softmax(q_in, k_in, key_ok, scale_log2e, HALF)
        if DROPOUT:
            keep = _dropout_keep(seed, pid_bh, rows, dropout_p, BLOCK)
            p_kept = _dropped(p, keep, dropout_p)
        else:
            p_kept = p
        # ordered so that each 64x64 temporary dies early (register pressure)
        diag = _dot_in(p_kept, v_in, q_in, HALF)
        if WEIGHTED:
            d_w_diag += tl.sum(g * diag, axis=0)
            g = g * w_diag[None, :]
        else:
            g = g * 0.5
        row_dot = tl.sum(g * diag, axis=1)
        dv = _dot_in(tl.trans(p_kept), g, q_in, HALF)
        dv_ptr = dv_base + rows[:, None] * stride_dvs + vcols[None, :]
        if ADD_KEYS:
            dv += tl.load(dv_ptr, mask=row_ok[:, None], other=0.0).to(tl.float32)
        tl.store(dv_ptr, dv.to(DVAL.dtype.element_ty), mask=row_ok[:, None])
        d_p = _dot_in(g, tl.trans(v_in), q_in, HALF)
        if DROPOUT:
            d_p = _dropped(d_p, keep, dropout_p)
        d_s = p * (d_p - row_dot[:, None]) * scale
        dk = _dot_in(tl.trans(d_s), q_in, q_in, HALF)
        dk_ptr = dk_base + rows[:, None] * stride_dks + cols[None, :]
        if ADD_KEYS:
            dk += tl.load(dk_ptr, mask=row_ok[:, None], other=0.0).to(tl.float32)
        tl.store(dk_ptr, dk.to(DK.dtype.element_ty), mask=row_ok[:, None])
        dq_ptr = dq_base + rows[:, None] * stride_dqs + cols[None, :]
        dq = tl.load(dq_ptr, mask=row_ok[:, None], other=0.0).to(tl.float32) + _dot_in(d_s, k_in, q_in, HALF)
        tl.store(dq_ptr, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
    if WEIGHTED:
        tl.atomic_add(D_W_DIAG + h * DV + vcols, d_w_diag)


@triton.jit
def _key_tile(
    k_base, v_base, dk_base, dv_base, mask_base, rows, stride_ks, stride_vs, stride_dks, stride_dvs, beta, shift,
    d_state, d_norm, seq,
    D: tl.constexpr, DV: tl.constexpr, HAS_MASK: tl.constexpr, ACCUMULATE: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """The LLN part of ``dk, dv`` for the key ``rows`` of one tile from ``dS, dz``, stored, or with
    ``ACCUMULATE`` added to what the tile already holds (the block softmax's part)."""
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    row_ok = rows < seq
    ok = _key_ok(mask_base, rows, row_ok, HAS_MASK)
    k = _load_rows(k_base, rows, row_ok, cols, stride_ks).to(tl.float32)
    v = _load_rows(v_base, rows, row_ok, vcols, stride_vs).to(tl.float32)
    phi = tl.where(ok[:, None], tl.exp(beta * k - shift[None, :]), 0.0)
    dk = (_dot(v, tl.trans(d_state), HALF) + d_norm[None, :]) * phi * beta
    dv = _dot(phi, d_state, HALF)
    dk_ptr = dk_base + rows[:, None] * stride_dks + cols[None, :]
    dv_ptr = dv_base + rows[:, None] * stride_dvs + vcols[None, :]
    if ACCUMULATE:
        dk += tl.load(dk_ptr, mask=row_ok[:, None], other=0.0).to(tl.float32)
        dv += tl.load(dv_ptr, mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(dk_ptr, dk.to(dk_base.dtype.element_ty), mask=row_ok[:, None])
    tl.store(dv_ptr, dv.to(dv_base.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def lln_backward_key_kernel(
    K, V, MASK, DK, DVAL, BETA, SHIFT, D_STATE, D_NORM,
    stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs,
    stride_dkb, stride_dkh, stride_dks, stride_dvb, stride_dvh, stride_dvs, stride_mb,
    heads, seq,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr,
    HAS_MASK: tl.constexpr, ACCUMULATE: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """Key side of the backward: the LLN part of ``dk, dv`` from ``dS, dz`` (``_key_tile``), one tile per
    program; ``ACCUMULATE`` adds it to what ``DK, DVAL`` already hold (the block softmax's part)."""
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    _key_tile(
        K + b * stride_kb + h * stride_kh, V + b * stride_vb + h * stride_vh,
        DK + b * stride_dkb + h * stride_dkh, DVAL + b * stride_dvb + h * stride_dvh, MASK + b * stride_mb,
        pid_t * BLOCK + tl.arange(0, BLOCK), stride_ks, stride_vs, stride_dks, stride_dvs,
        tl.load(BETA + pid_bh), tl.load(SHIFT + pid_bh * D + cols),
        tl.load(D_STATE + pid_bh * D * DV + cols[:, None] * DV + vcols[None, :]), tl.load(D_NORM + pid_bh * D + cols),
        seq, D, DV, HAS_MASK, ACCUMULATE, HALF,
    )  # fmt: skip


@triton.jit
def lln_backward_unsplit_kernel(
    Q, K, V, MASK, GRAD, DQ, DK, DVAL, ALPHA, BETA, SHIFT, W_LLN, D_W_LLN,
    stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks, stride_vb, stride_vh, stride_vs,
    stride_gb, stride_gh, stride_gs, stride_dqb, stride_dqh, stride_dqs, stride_dkb, stride_dkh, stride_dks,
    stride_dvb, stride_dvh, stride_dvs, stride_mb,
    heads, seq, num_tiles, eps,
    D: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HAS_DIAG: tl.constexpr,
    WEIGHTED: tl.constexpr, HALF: tl.constexpr,
):  # fmt: skip
    """The whole LLN backward of one (batch, head) in one program, for calls that ``_split`` gives one program per
    (batch, head): the state rebuilt from k, v (``_state_tiles``), the query side (``_query_tiles``: dq stored),
    then the key side (``_key_tile``: dk, dv stored), with ``dS, dz`` kept in registers between the two; one
    launch instead of three, and no ``dS, dz`` buffers. ``d w_lln`` with ``HAS_DIAG`` and ``WEIGHTED`` (atomic).
    LLN + Diag's block pass runs after it and adds its part (``ADD_KEYS``). Grid: (bh,)."""
    pid_bh = tl.program_id(0)
    b = pid_bh // heads
    h = pid_bh % heads
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    mask_base = MASK + b * stride_mb
    cols = tl.arange(0, D)
    vcols = tl.arange(0, DV)
    alpha = tl.load(ALPHA + pid_bh)
    beta = tl.load(BETA + pid_bh)
    shift = tl.load(SHIFT + pid_bh * D + cols)
    state, norm = _state_tiles(
        k_base, v_base, mask_base, beta, shift, stride_ks, stride_vs, seq, 0, num_tiles, D, DV, BLOCK, HAS_MASK,
        HALF,
    )  # fmt: skip
    w_lln = alpha
    if HAS_DIAG and WEIGHTED:
        w_lln = tl.load(W_LLN + h * DV + vcols)
    d_state, d_norm, d_w_lln = _query_tiles(
        Q + b * stride_qb + h * stride_qh, GRAD + b * stride_gb + h * stride_gh, DQ + b * stride_dqb + h * stride_dqh,
        stride_qs, stride_gs, stride_dqs, alpha, shift, state, norm, w_lln, seq, 0, num_tiles, eps,
        D, DV, BLOCK, HAS_DIAG, WEIGHTED, HALF,
    )  # fmt: skip
    if HAS_DIAG and WEIGHTED:
        tl.atomic_add(D_W_LLN + h * DV + vcols, d_w_lln)
    dk_base = DK + b * stride_dkb + h * stride_dkh
    dv_base = DVAL + b * stride_dvb + h * stride_dvh
    for i in range(num_tiles):
        _key_tile(
            k_base, v_base, dk_base, dv_base, mask_base, i * BLOCK + tl.arange(0, BLOCK), stride_ks, stride_vs,
            stride_dks, stride_dvs, beta, shift, d_state, d_norm, seq, D, DV, HAS_MASK, False, HALF,
        )  # fmt: skip
