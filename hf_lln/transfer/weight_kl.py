"""The attention-weight KL of an LLN or LLN+Diag student with its gradient written out.

The layer-by-layer stage's loss is ``KL(T ‖ M)`` of every query row, ``T`` the teacher's softmax rows and ``M`` the
student's: LLN's ``P = W / rowsum(W)`` with ``W = exp(alpha q) exp(beta k)ᵀ`` (``hf_lln.transfer.matching.
lln_log_probs``), or LLN+Diag's ``(P + D) / 2`` with ``D`` its block-diagonal softmax. Autograd through those
formulas keeps and revisits a dozen ``(batch, heads, queries, seq)`` tensors; written out, the gradient is

    KL = Σ T log(T / M),  dKL/dM = -T / M (0 where M is clamped at tiny),
    dKL/dW = (dKL/dP - rowsum(dKL/dP ⊙ P)) / rowsum(W),

then two matrix products back to the feature maps: about half the elementwise passes over O(seq²) memory and half
the kernel launches (MiniLM on 2 CPU cores, MRPC batches of 32: the weight loss's forward and backward went from
0.62 to 0.54 s a step, the projections and matrix products staying). ``weights_loss(student_log_probs(...))`` in
``hf_lln.transfer.matching`` is the same loss through autograd, the reference the tests compare with.
"""

from __future__ import annotations

import torch

# Smallest probability whose log is taken (LLN rows are sums of exponentials that can underflow); the autograd path
# of hf_lln.transfer.matching clamps at the same value.
TINY = torch.finfo(torch.float32).tiny


class _FeatureKL(torch.autograd.Function):
    """``KL(teacher ‖ student)`` per group, from the student's log feature maps (see ``feature_kl``)."""

    @staticmethod
    def forward(ctx, log_q, log_k, diag, teacher_probs, row_weights, groups):
        # per-channel key maxima and per-row query maxima: constants of a row, they cancel in the normalisation
        key_max = log_k.amax(dim=2, keepdim=True).clamp_min(torch.finfo(log_q.dtype).min)
        log_q = log_q + key_max
        query_features = torch.exp(log_q - log_q.amax(dim=-1, keepdim=True))
        key_features = torch.exp(log_k - key_max)
        probs = query_features @ key_features.transpose(-1, -2)
        # at least 1 where a row has a real key (its key of largest feature in the query's largest channel gives
        # 1); 0 only in a sequence without one, whose rows then stay 0 and weigh 0, where 0 / 0 would be NaN
        row_sums = probs.sum(dim=-1, keepdim=True).clamp_min(TINY)
        probs /= row_sums
        mixed = probs if diag is None else (probs + diag).mul_(0.5)
        # T log(T / M): one logarithm a probability where T log T - T log M takes two, and T / M is the gradient's
        # (xlogy would skip the clamp where T = 0, but is several times slower than log on a CPU)
        # in place where it can be: on a CPU each new (batch, heads, rows, seq) tensor costs page faults
        ratio = mixed.clamp_min(TINY)
        torch.div(teacher_probs, ratio, out=ratio)
        kl = ratio.clamp_min(TINY).log_().mul_(teacher_probs).sum(dim=-1)
        weighted = (kl * row_weights).reshape(groups, -1).sum(dim=-1)
        ctx.save_for_backward(query_features, key_features, probs, mixed, row_sums, ratio, row_weights)
        ctx.has_diag, ctx.groups = diag is not None, groups
        return weighted

    @staticmethod
    def backward(ctx, grad):
        query_features, key_features, probs, mixed, row_sums, ratio, row_weights = ctx.saved_tensors
        scale = (grad[:, None] * row_weights.reshape(ctx.groups, -1)).reshape(row_weights.shape)[..., None]
        grad_mixed = torch.where(mixed >= TINY, ratio, 0.0).mul_(-scale)
        grad_diag = None
        if ctx.has_diag:
            grad_mixed.mul_(0.5)
            grad_diag = grad_mixed
        # grad_diag is grad_mixed: a copy for it, else in place
        grad_weights = grad_mixed.clone() if ctx.has_diag else grad_mixed
        grad_weights.sub_((grad_mixed * probs).sum(dim=-1, keepdim=True)).div_(row_sums)
        grad_log_q = (grad_weights @ key_features).mul_(query_features)
        grad_log_k = (grad_weights.transpose(-1, -2) @ query_features).mul_(key_features)
        return grad_log_q, grad_log_k, grad_diag, None, None, None


def feature_kl(
    log_q: torch.Tensor,
    log_k: torch.Tensor,
    teacher_probs: torch.Tensor,
    mask: torch.Tensor,
    *,
    diag: torch.Tensor | None = None,
    groups: int | None = None,
    queries: torch.Tensor | None = None,
) -> torch.Tensor:
    """``KL(T ‖ M)`` averaged over heads and real query rows, float32, as ``hf_lln.transfer.matching.weights_loss``.

    ``log_q: (batch, heads, rows, head_dim)``: ``alpha q`` of the compared query rows; ``log_k: (batch, heads, seq,
    head_dim)``: ``beta k``, ``-inf`` at padded keys; ``teacher_probs: (batch, heads, rows, seq)``; ``mask: (batch,
    seq)`` bool; ``diag``: LLN+Diag's block-diagonal softmax ``(batch, heads, rows, seq)`` (None for LLN);
    ``queries: (rows,)``: the positions of the rows (None: every position); ``groups``: the batch is that many equal
    parts (stacked layers), one mean each, ``(groups,)``. Differentiable w.r.t. ``log_q``, ``log_k`` and ``diag``.
    """
    real = mask if queries is None else mask[:, queries]
    row_weights = real[:, None, :].expand(*log_q.shape[:3]).to(torch.float32)
    counts = row_weights.reshape(groups or 1, -1).sum(dim=-1).clamp_min(1.0)
    total = _FeatureKL.apply(
        log_q.float(),
        log_k.float(),
        None if diag is None else diag.float(),
        teacher_probs.float(),
        row_weights,
        groups or 1,
    )
    return (total / counts).reshape(() if groups is None else -1)
