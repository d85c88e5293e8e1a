"""``hf_lln.transfer.weight_kl``: the LLN/LLN+Diag weight loss with its gradient written out, against autograd."""

from __future__ import annotations

import math

import pytest
import torch

from hf_lln.transfer.matching import (
    softmax_probs,
    split_heads,
    student_log_probs,
    student_weights_loss,
    weights_loss,
)
from tests.test_transfer import random_batches, tiny_pair


def inputs(variant: str, sharpness: float, seed: int = 0):
    """A student layer's self-attention, its ``q, k`` on random hidden states of two stacked batches (scaled by
    ``sharpness``: sharp rows underflow, where the loss clamps), teacher rows and the mask."""
    _, student = tiny_pair(variant)
    self_attention = student.encoder.layer[1].attention.self
    generator = torch.Generator().manual_seed(seed)
    mask = torch.cat([batch["attention_mask"] for batch in random_batches(count=2, seed=seed)]).bool()
    hidden = torch.randn(*mask.shape, 32, generator=generator) * sharpness
    q, k = (x.detach().requires_grad_() for x in split_heads(self_attention, hidden, "qk"))
    teacher_q, teacher_k = (torch.randn(q.shape, generator=generator) * 2 for _ in range(2))
    return self_attention, q, k, teacher_q, teacher_k, mask


@pytest.mark.parametrize("variant", ["lln", "lln_diag"])
@pytest.mark.parametrize("sharpness", [1.0, 30.0])
@pytest.mark.parametrize("queries", [None, [7, 0, 10, 3]])
def test_loss_and_gradients_equal_autograd_through_the_formulas(variant, sharpness, queries):
    """Per stacked group, the loss and the gradients w.r.t. q and k equal autograd's through
    ``student_log_probs`` and ``weights_loss`` (rows past a sequence's end, padded keys and, when sharp, clamped
    probabilities included)."""
    self_attention, q, k, teacher_q, teacher_k, mask = inputs(variant, sharpness)
    queries = None if queries is None else torch.tensor(queries)
    rows = teacher_q if queries is None else teacher_q[:, :, queries]
    teacher = softmax_probs(rows, teacher_k, mask, self_attention.scaling)
    log_probs = student_log_probs(self_attention, q, k, mask, queries)
    if sharpness > 1:  # the clamp at tiny is exercised
        assert (log_probs <= math.log(torch.finfo(torch.float32).tiny) + 1e-3).any()
    expected = weights_loss(log_probs, teacher, mask, groups=2, queries=queries)
    got = student_weights_loss(self_attention, q, k, teacher, mask, groups=2, queries=queries)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    upstream = torch.tensor([0.3, 1.7])
    for ours, theirs in zip(
        torch.autograd.grad((got * upstream).sum(), (q, k)),
        torch.autograd.grad((expected * upstream).sum(), (q, k)),
        strict=True,
    ):
        assert ours.abs().max() > 0
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())


def test_ungrouped_loss_is_a_scalar_and_bf16_inputs_give_finite_float32():
    self_attention, q, k, teacher_q, teacher_k, mask = inputs("lln_diag", 1.0)
    teacher = softmax_probs(teacher_q, teacher_k, mask, self_attention.scaling)
    single = student_weights_loss(self_attention, q, k, teacher, mask)
    assert single.shape == () and single.dtype == torch.float32
    torch.testing.assert_close(
        single, weights_loss(student_log_probs(self_attention, q, k, mask), teacher, mask)
    )
    half = student_weights_loss(self_attention, q.bfloat16(), k.bfloat16(), teacher, mask)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, single, rtol=0.05, atol=0)
