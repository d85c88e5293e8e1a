"""A pass that reduces over the sequence either shares a (batch, head)'s tiles out to several programs, which add
their sums atomically into zero-filled buffers, or gives the whole sequence to one program, which stores its sums
(for per-sequence LLN the statistics, scales and state passes then run as one ``lln_prologue_kernel``). Which one
runs depends on the GPU and the batch (``LaunchConfig.unsplit_programs_per_sm``): both must give the dense
reference's outputs and gradients, the mix weights' included."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from hf_lln.ops import reference  # noqa: E402
from hf_lln.ops.lln import lln_scales  # noqa: E402
from hf_lln.ops.triton import functions  # noqa: E402
from tests.ops._fused import (  # noqa: E402
    DEVICE,
    FUSED_BLOCK_SIZE,
    FUSED_SCALE,
    fused_call,
    inputs,
    needs_kernels,
    outputs_and_grads,
    poison_allocator,
)
from tests.ops._variants import relative_error  # noqa: E402

# one program per (batch, head) whatever the GPU, its output pass at the default tiles per program (every tile
# of these short sequences in one program) or at three (the last program's tiles partly past the sequence); or
# about 64 programs per SM (interpreter: 64 programs), which splits the sequences of these small batches into
# several programs each
SPLITS = {
    "one_program": {"unsplit_programs_per_sm": 0},
    "one_program_3_output_tiles": {"unsplit_programs_per_sm": 0, "output_tiles_per_program": 3},
    "one_program_16_row_backward": {"unsplit_programs_per_sm": 0, "backward_unsplit_rows": 16},
    "one_program_32_row_prologue": {"unsplit_programs_per_sm": 0, "prologue_rows": 32},
    "shared": {"unsplit_programs_per_sm": 10**9},
}


@pytest.fixture(params=list(SPLITS))
def split(request, monkeypatch):
    monkeypatch.setattr(functions.launch_config, "programs_per_sm", 64)
    for name, value in SPLITS[request.param].items():
        monkeypatch.setattr(functions.launch_config, name, value)
    return request.param


def _fused(variant):
    """``fused_call`` of ``variant``, "lln_global" being LLN with global statistics, "lln_diag" LLN + Diag with
    learnable weights and "lln_diag_average" with the average mix (the kernels' constant halves)."""
    if variant == "lln_global":
        return lambda mask: fused_call("lln", mask, stats="global")
    if variant == "lln_diag_average":
        return lambda mask: fused_call("lln_diag", mask)
    return lambda mask: fused_call(variant, mask)


def _dense(variant):
    def call(q, k, v, mask, *weights):
        if variant == "cheap_linear":
            return reference.dense_cheap_linear(q, k, v, mask, scale=FUSED_SCALE)
        if variant in ("lln", "lln_global"):
            stats = "global" if variant == "lln_global" else "per_sequence"
            return reference.dense_lln(q, k, v, mask, scale=FUSED_SCALE, stats=stats)
        mix = "learnable_scale" if weights else "average"
        lln_weight, diag_weight = weights or (None, None)
        return reference.dense_lln_diag(
            q, k, v, mask, mix=mix, lln_weight=lln_weight, diag_weight=diag_weight,
            block_size=FUSED_BLOCK_SIZE, scale=FUSED_SCALE,
        )  # fmt: skip

    return call


@needs_kernels
@pytest.mark.parametrize("variant", ["lln", "lln_global", "lln_diag", "lln_diag_average", "cheap_linear"])
@pytest.mark.parametrize("seq", [1, 45, 100])
def test_one_program_or_shared_sequences_match_the_dense_reference(variant, seq, split):
    """Three right-padded sequences, the last with no real token, in float32 against float64."""
    q, k, v, mask = inputs(3, 2, seq, 16, torch.float32, seed=seq)
    weights = [
        torch.rand(2, 16, generator=torch.Generator().manual_seed(seq)).to(DEVICE) + 0.5 for _ in range(2)
    ]
    if variant != "lln_diag":
        weights = []
    grad_out = torch.randn(3, 2, seq, 16, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    batch_heads, num_tiles = 6, -(-seq // functions.ROW_BLOCK)
    assert (functions._split(batch_heads, num_tiles, q.device)[1] == 1) == (
        split.startswith("one_program") or seq == 1
    )
    poison_allocator()
    got = outputs_and_grads(_fused(variant)(mask), [q, k, v, *weights], grad_out)
    want = outputs_and_grads(
        lambda *t: _dense(variant)(*t[:3], mask, *t[3:]),
        [t.double() for t in (q, k, v, *weights)],
        grad_out.double(),
    )
    for name, a, b in zip(["out", "dq", "dk", "dv", "d w_lln", "d w_diag"], got, want, strict=False):
        assert relative_error(a, b) < 1e-4, (name, relative_error(a, b))


@needs_kernels
@pytest.mark.parametrize("variant", ["lln", "lln_diag", "cheap_linear"])
def test_the_backward_rebuilds_the_state_instead_of_keeping_it(variant, split):
    """Nothing of the (batch * heads, head_dim, v_dim + 1) state stays saved for the backward, whether sequences
    are shared out or not: the backward rebuilds it (its gradients are tested above)."""
    q, k, v, mask = inputs(3, 2, 45, 16, torch.float32, seed=2)
    weights = [torch.ones(2, 16, device=DEVICE)] * 2 if variant == "lln_diag" else []
    leaves = [t.requires_grad_() for t in (q, k, v)]
    out = _fused(variant)(mask)(*leaves, *weights)
    state_size = 6 * 16 * 17 if variant != "cheap_linear" else 6 * (16 * 16 + 1)
    saved = [t.numel() for t in out.grad_fn.saved_tensors if t is not None]
    assert state_size not in saved


@needs_kernels
@pytest.mark.parametrize("stats", ["per_sequence", "global"])
def test_statistics_of_values_far_from_zero(stats, split):
    """Queries and keys 10^4 times their spread away from zero, where a sum of squares about zero cancels in
    float32: the kernels' alpha and beta still match the float64 statistics of the same values."""
    q, k, v, mask = inputs(3, 2, 100, 16, torch.float32, seed=5)
    q, k = 300.0 + 0.03 * q, -500.0 + 0.05 * k
    _, scale_terms = functions._lln_forward(
        q, k, v, None, None, functions.key_mask(mask), None, None, FUSED_SCALE, 1e-6, stats, 0.0
    )
    want_alpha, want_beta = lln_scales(q.double(), k.double(), mask, scale=FUSED_SCALE, stats=stats)
    got = scale_terms[: 2 * 6].view(2, 6)
    for name, a, b in (("alpha", got[0], want_alpha), ("beta", got[1], want_beta)):
        # the (batch, head) pairs of the first two sequences; the third has no real token (floored stds)
        assert relative_error(a[:4], b.flatten()[:4].float()) < 1e-4, (name, a, b.flatten())
