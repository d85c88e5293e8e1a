"""Attention dropout inside the fused LLN + Diag kernels: the keep mask's statistics and reproducibility,
and forward and gradients against the dense float64 reference given the same mask."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

pytest.importorskip("triton")

from hf_lln.ops import triton as fused  # noqa: E402
from hf_lln.ops.triton.dropout import draw_seed, keep_mask  # noqa: E402
from hf_lln.ops.triton.functions import fused_lln  # noqa: E402
from tests.ops._fused import (  # noqa: E402
    DEVICE,
    TOLERANCE,
    dense_lln_diag_dropout,
    inputs,
    needs_kernels,
    outputs_and_grads,
    rel_error,
)
from tests.ops._variants import relative_error  # noqa: E402


def _weights(mix, heads, v_dim, device, seed=0):
    """Learnable mix weights (float64 leaves for the reference) for ``mix``."""
    gen = torch.Generator().manual_seed(seed)
    names = {
        "average": (),
        "learnable_scale": ("lln_weight", "diag_weight"),
        "learnable_ratio": ("lln_weight",),
    }
    return {
        name: (0.3 + 0.4 * torch.rand(heads, v_dim, generator=gen)).double().to(device) for name in names[mix]
    }


def _fused_call(mask, *, mix, weights, block_size, scale, dropout_p):
    """``fn(q, k, v, *weights)`` running the fused kernels as ``hf_lln.ops.triton.lln_diag_attention`` does."""

    def call(q, k, v, *leaves):
        named = {name: w.float() for name, w in zip(weights, leaves, strict=True)}
        w_lln, w_diag = fused._mix_weights(mix, named.get("lln_weight"), named.get("diag_weight"))
        return fused_lln(
            q, k, v, mask, w_lln, w_diag, block_size=block_size, scale=scale, eps=1e-6,
            stats="per_sequence", dropout_p=dropout_p,
        )  # fmt: skip

    return call


def _compare_with_reference(q, k, v, mask, *, mix, block_size, dropout_p, seed=0):
    """Errors of the fused out, dq, dk, dv (and mix-weight gradients) against the dense float64
    reference that uses the keep mask the kernels drew."""
    batch, heads, seq, head_dim = q.shape
    scale = head_dim**-0.5
    weights = _weights(mix, heads, v.shape[-1], q.device, seed)
    grad_out = torch.randn(batch, heads, seq, v.shape[-1], generator=torch.Generator().manual_seed(seed + 1))
    grad_out = grad_out.double().to(q.device)
    torch.manual_seed(seed)
    keep = keep_mask(draw_seed(q.device), batch, heads, seq, block_size, dropout_p)
    torch.manual_seed(seed)
    call = _fused_call(
        mask, mix=mix, weights=weights, block_size=block_size, scale=scale, dropout_p=dropout_p
    )
    got = outputs_and_grads(call, [q, k, v, *weights.values()], grad_out)

    def reference(q, k, v, *leaves):
        named = dict(zip(weights, leaves, strict=True))
        return dense_lln_diag_dropout(
            q, k, v, mask, keep, dropout_p, mix=mix, weights=named, block_size=block_size, scale=scale
        )

    want = outputs_and_grads(reference, [t.double() for t in (q, k, v, *weights.values())], grad_out)
    return [rel_error(g, w) for g, w in zip(got, want, strict=True)]


@needs_kernels
@pytest.mark.parametrize("dropout_p", [0.1, 0.5])
def test_keep_rate_within_binomial_bounds(dropout_p):
    batch, heads, seq, block = 2, 3, 256, 64
    torch.manual_seed(0)
    keep = keep_mask(draw_seed(torch.device(DEVICE)), batch, heads, seq, block, dropout_p).cpu()
    index = torch.arange(seq)
    same_block = index[:, None] // block == index[None, :] // block
    assert not keep[..., ~same_block].any(), "keys outside the diagonal blocks are never kept"
    kept = keep[..., same_block].double()
    n = kept.numel()
    sigma = (dropout_p * (1 - dropout_p) / n) ** 0.5
    assert abs(kept.mean().item() - (1 - dropout_p)) < 5 * sigma
    # one stream per (batch, head): the masks of two heads and of two rows differ
    assert (keep[0, 0] != keep[0, 1]).any() and (keep[0, 0] != keep[1, 0]).any()
    assert (keep[0, 0, 0, :block] != keep[0, 0, 1, :block]).any()


@needs_kernels
@pytest.mark.parametrize("block", [16, 45, 64])
def test_neighbouring_keys_are_dropped_independently(block):
    """Each Philox call gives four numbers, which land in four neighbouring key columns of a row: every column
    keeps at the same rate, and each column's decisions are uncorrelated with those of the next three columns and
    of the same column in the next row (a mix-up of the four numbers or of the counters would correlate them)."""
    batch, heads, seq, dropout_p = 4, 4, 256, 0.3
    torch.manual_seed(1)
    keep = keep_mask(draw_seed(torch.device(DEVICE)), batch, heads, seq, block, dropout_p).cpu()
    index = torch.arange(seq)
    keys = (index // block * block)[:, None] + torch.arange(block)  # query i's key columns in its block
    inside = keys < seq
    tiles = keep.gather(
        3, keys.clamp(max=seq - 1).expand(batch, heads, -1, -1)
    ).double()  # (b, h, seq, block)
    full_rows = inside.all(1)
    rows = tiles[:, :, full_rows].reshape(-1, block)
    n = rows.shape[0]
    sigma = (dropout_p * (1 - dropout_p) / n) ** 0.5
    assert ((rows.mean(0) - (1 - dropout_p)).abs() < 5 * sigma).all(), "every key column keeps at 1 - p"
    centred = rows - rows.mean(0)
    bound = 5 / (rows.numel() ** 0.5)
    lags = [(centred[:, :-lag] * centred[:, lag:]).mean() / centred.var() for lag in (1, 2, 3)]
    down = (centred[:-1] * centred[1:]).mean() / centred.var()
    for correlation in [*lags, down]:
        assert abs(correlation.item()) < bound, ([lag.item() for lag in lags], down.item())


@needs_kernels
def test_seed_comes_from_torch_generator():
    device = torch.device(DEVICE)
    torch.manual_seed(3)
    first = keep_mask(draw_seed(device), 1, 2, 40, 16, 0.3)
    torch.manual_seed(3)
    assert torch.equal(keep_mask(draw_seed(device), 1, 2, 40, 16, 0.3), first)
    assert not torch.equal(keep_mask(draw_seed(device), 1, 2, 40, 16, 0.3), first)


@needs_kernels
def test_same_seed_same_output_and_gradients_other_seed_differs():
    q, k, v, mask = inputs(2, 2, 40, 16, torch.float32, seed=5)
    call = _fused_call(mask, mix="average", weights={}, block_size=16, scale=0.25, dropout_p=0.2)
    grad_out = torch.randn(2, 2, 40, 16).to(DEVICE)
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(outputs_and_grads(call, [q, k, v], grad_out))
    for a, b in zip(runs[0], runs[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert (runs[0][0] - runs[2][0]).abs().max() > 1e-2


@needs_kernels
def test_zero_dropout_is_the_no_dropout_path_and_draws_no_seed():
    q, k, v, mask = inputs(2, 2, 33, 16, torch.float32, seed=2)
    grad_out = torch.randn(2, 2, 33, 16).to(DEVICE)
    plain = _fused_call(mask, mix="average", weights={}, block_size=16, scale=0.25, dropout_p=0.0)
    want = outputs_and_grads(plain, [q, k, v], grad_out)
    state = torch.get_rng_state()

    def without_argument(q, k, v):
        w_lln, w_diag = fused._mix_weights("average", None, None)
        return fused_lln(
            q, k, v, mask, w_lln, w_diag, block_size=16, scale=0.25, eps=1e-6, stats="per_sequence"
        )

    got = outputs_and_grads(without_argument, [q, k, v], grad_out)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_kernels
def test_activation_checkpointing_recomputes_the_same_mask():
    """``torch.utils.checkpoint`` restores the RNG state before recomputing the forward, so the seed,
    drawn from torch's generator, and with it the mask are those of the first forward."""
    q, k, v, mask = inputs(2, 2, 24, 16, torch.float32, seed=6)
    call = _fused_call(mask, mix="average", weights={}, block_size=16, scale=0.25, dropout_p=0.3)
    grad_out = torch.randn(2, 2, 24, 16).to(DEVICE)
    torch.manual_seed(11)
    want = outputs_and_grads(call, [q, k, v], grad_out)
    torch.manual_seed(11)
    got = outputs_and_grads(lambda *t: checkpoint(call, *t, use_reentrant=False), [q, k, v], grad_out)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# (seq, block_size, mix, padded): lengths that leave a partial last block, a single token, blocks
# narrower than the register tile, every mix mode, with and without padding.
REFERENCE_CASES = [
    (1, 16, "average", True),
    (17, 16, "learnable_scale", True),
    (33, 8, "learnable_ratio", True),
    (100, 16, "average", False),
    (100, 24, "learnable_scale", True),
]


@needs_kernels
@pytest.mark.parametrize("seq, block_size, mix, padded", REFERENCE_CASES, ids=str)
def test_matches_dense_reference_given_keep_mask(seq, block_size, mix, padded):
    q, k, v, mask = inputs(3, 2, seq, 16, torch.float32, padded=padded, seed=seq)
    errors = _compare_with_reference(q, k, v, mask, mix=mix, block_size=block_size, dropout_p=0.3, seed=seq)
    assert max(errors) < TOLERANCE[torch.float32], errors


@needs_kernels
def test_half_precision_matches_dense_reference():
    q, k, v, mask = inputs(2, 2, 50, 32, torch.float16, seed=4)
    errors = _compare_with_reference(q, k, v, mask, mix="learnable_scale", block_size=32, dropout_p=0.1)
    assert max(errors) < TOLERANCE[torch.float16], errors


GPU_CASES = [
    (torch.bfloat16, 64, 64, 512),
    (torch.float16, 64, 64, 1000),
    (torch.float32, 64, 64, 333),
    (torch.float32, 32, 32, 1000),
    (torch.bfloat16, 128, 128, 600),
    (torch.float16, 128, 64, 513),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, head_dim, block_size, seq", GPU_CASES, ids=str)
def test_gpu_matches_dense_reference_given_keep_mask(dtype, head_dim, block_size, seq):
    q, k, v, mask = inputs(3, 4, seq, head_dim, dtype, seed=seq, device="cuda")
    errors = _compare_with_reference(
        q, k, v, mask, mix="learnable_scale", block_size=block_size, dropout_p=0.1, seed=seq
    )
    assert max(errors) < TOLERANCE[dtype], errors


@pytest.mark.gpu
def test_gpu_keep_rate_and_public_function():
    """Keep rate at 6M draws, and the public function (through the dispatcher) with dropout 0.1."""
    device = torch.device("cuda")
    keep = keep_mask(draw_seed(device), 2, 12, 4096, 64, 0.1)
    index = torch.arange(4096, device=device)
    kept = keep[..., index[:, None] // 64 == index[None, :] // 64].double()
    sigma = (0.1 * 0.9 / kept.numel()) ** 0.5
    assert abs(kept.mean().item() - 0.9) < 5 * sigma
    from hf_lln.ops import lln_diag_attention
    from hf_lln.ops.dispatch import use_kernels

    q, k, v, mask = inputs(2, 12, 512, 64, torch.bfloat16, device="cuda")
    assert fused.unsupported_reason("lln_diag", q, k, v, mask, dropout_p=0.1) is None
    with use_kernels("triton"):
        torch.manual_seed(0)
        first = lln_diag_attention(q, k, v, mask, dropout_p=0.1)
        torch.manual_seed(0)
        again = lln_diag_attention(q, k, v, mask, dropout_p=0.1)
        plain = lln_diag_attention(q, k, v, mask)
    # The same mask: equal but for the rounding of the state's atomic adds, whose order varies between runs.
    assert relative_error(first, again) < 1e-3
    assert (first.float() - plain.float()).abs().max() > 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("block_size", [8, 16])
def test_gpu_small_blocks_with_dropout_and_padding_run_fused_and_right(block_size):
    """Blocks in 16-wide register tiles with dropout and a padding mask: with the mask read as bytes they computed
    wrong outputs and gradients on an H200 (``functions.key_mask``); the dispatcher keeps them fused."""
    from hf_lln.ops.dispatch import explain_backend

    q, k, v, mask = inputs(3, 4, 200, 64, torch.bfloat16, seed=block_size, device="cuda")
    assert explain_backend("lln_diag", q, k, v, mask, dropout_p=0.1, block_size=block_size)[0] == "triton"
    errors = _compare_with_reference(q, k, v, mask, mix="average", block_size=block_size, dropout_p=0.1)
    assert max(errors) < TOLERANCE[torch.bfloat16], errors
