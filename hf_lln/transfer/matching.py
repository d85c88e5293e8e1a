"""One attention layer of a teacher (softmax) and of a student (an hf_lln variant) on the same hidden states, and
the losses that compare them.

A BERT/RoBERTa attention block is ``LayerNorm(h + dense(attention(q(h), k(h), v(h))))``. What is matched is the
output of ``dense`` (the "o" projection), before the residual and the LayerNorm: the residual is the same for
both models and would only dilute the difference. Students run their real attention function (the one the model
uses at inference, fused kernels included); their attention matrix, needed by the weight loss only, is computed
densely in O(seq²), which is fine for the short sequences transfer trains on. The weight loss may compare a
sample of the query rows (``queries``, the positions kept): each row is a distribution to match on its own, so a
random share of them is an unbiased estimate of the mean at that share of the O(seq²) work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_lln.integration.attention import ATTENTION_FUNCTIONS
from hf_lln.models.configuration_lln import lln_settings
from hf_lln.ops.lln import lln_scales
from hf_lln.ops.reference import block_diag_matrix
from hf_lln.transfer.weight_kl import TINY, feature_kl
from hf_lln.variants import VARIANTS, get_variant

LOSSES = ("auto", "weights", "output", "both")


def split_heads(self_attention: torch.nn.Module, hidden: torch.Tensor, names: str = "qkv"):
    """``hidden: (batch, seq, hidden)`` -> the projections ``names`` (of ``q``, ``k``, ``v``), each ``(batch, heads,
    seq, head_dim)``, of a ``BertSelfAttention`` or ``RobertaSelfAttention``."""
    shape = (*hidden.shape[:-1], -1, self_attention.attention_head_size)
    projections = {"q": self_attention.query, "k": self_attention.key, "v": self_attention.value}
    return tuple(projections[name](hidden).view(shape).transpose(1, 2) for name in names)


def stacked_heads(linears, hidden: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Layer ``i``'s input ``hidden[i]`` through ``linears[i]`` (its query or key projection), every layer in one
    batched product: ``hidden: (layers, batch, seq, in)`` -> ``(layers·batch, heads, seq, head_dim)``."""
    layers, batch, seq, _ = hidden.shape
    device = hidden.device.type
    # the dtype nn.Linear computes in: autocast's, else the input's
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    weight = torch.stack([linear.weight for linear in linears]).transpose(1, 2).to(dtype)
    flat = hidden.flatten(1, 2).to(dtype)
    with torch.autocast(device, enabled=False):
        if linears[0].bias is None:
            out = torch.bmm(flat, weight)
        else:
            bias = torch.stack([linear.bias for linear in linears])[:, None, :].to(dtype)
            out = torch.baddbmm(bias, flat, weight)
    return out.view(layers * batch, seq, -1, head_dim).transpose(1, 2)


def _merge_heads(context: torch.Tensor) -> torch.Tensor:
    """``(batch, seq, heads, head_dim)`` -> ``(batch, seq, heads·head_dim)``."""
    return context.reshape(*context.shape[:2], -1)


def softmax_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention ``(batch, heads, queries, seq)`` in float32 of ``q: (batch, heads, queries, head_dim)``
    over the real keys of ``k: (batch, heads, seq, head_dim)``, ``mask: (batch, seq)``. Padded keys get the lowest
    float rather than ``-inf``: exactly 0 beside a real key, and a sequence without one gets finite (uniform) rows,
    which the losses weigh by 0, where ``-inf`` would give NaN and ``0 * NaN`` poison the mean."""
    logits = scale * q.float() @ k.float().transpose(-1, -2)
    return torch.softmax(logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min), dim=-1)


def teacher_attention(
    layer: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor, loss: str, queries=None
):
    """What ``loss`` compares of a softmax teacher layer, ``(output, probs)``: its attention output
    ``(batch, seq, hidden)`` and attention probabilities ``(batch, heads, seq, seq)`` (only the rows of the query
    positions ``queries: (count,)`` where given), float32, each None when ``loss`` does not use it. ``hidden:
    (batch, seq, hidden)`` the layer's input; ``mask: (batch, seq)`` bool."""
    self_attention = layer.attention.self
    needs_output = loss in ("output", "both")
    q, k, *v = split_heads(self_attention, hidden, "qkv" if needs_output else "qk")
    if not needs_output:
        return None, softmax_probs(_rows(q, queries), k, mask, self_attention.scaling)
    probs = softmax_probs(q, k, mask, self_attention.scaling)
    context = (probs @ v[0].float()).transpose(1, 2)
    output = layer.attention.output.dense(_merge_heads(context).to(hidden.dtype)).float()
    return output, _rows(probs, queries) if loss == "both" else None


def _rows(x: torch.Tensor, queries: torch.Tensor | None) -> torch.Tensor:
    """The query rows ``queries`` of ``x: (batch, heads, seq, ...)`` (all of them for None)."""
    return x if queries is None else x[:, :, queries]


def student_attention(
    layer: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor, loss: str, queries=None
):
    """What ``loss`` compares of a student layer, ``(output, log_probs)``: its attention output ``(batch, seq,
    hidden)`` through its own attention function and the log of its attention matrix ``(batch, heads, seq,
    seq)`` (only the rows of ``queries`` where given), float32, each None when ``loss`` does not use it."""
    self_attention = layer.attention.self
    needs_output = loss in ("output", "both")
    q, k, *v = split_heads(self_attention, hidden, "qkv" if needs_output else "qk")
    output = log_probs = None
    if needs_output:
        attention = ATTENTION_FUNCTIONS[self_attention.config._attn_implementation]
        context, _ = attention(self_attention, q, k, v[0], mask, scaling=self_attention.scaling, dropout=0.0)
        output = layer.attention.output.dense(_merge_heads(context)).float()
    if loss in ("weights", "both"):
        log_probs = student_log_probs(self_attention, q, k, mask, queries)
    return output, log_probs


def stacked_weight_losses(
    teacher_layers, student_layers, hidden: torch.Tensor, mask: torch.Tensor, queries=None
) -> torch.Tensor:
    """The attention-weight KL (``weights_loss``) of several layers at once, ``(layers,)`` float32: layer ``i`` of
    teacher and student on its input ``hidden[i]``, ``hidden: (layers, batch, seq, hidden)``, ``mask: (batch, seq)``
    bool, over the rows of the query positions ``queries: (count,)`` (all where None). The layers are stacked
    along the batch, so a step launches one set of kernels for all of them (a transfer step is bound by the host's
    launches, not by the GPU's arithmetic); the student layers must share their attention options
    (``attention_options``), which all but per-layer random features do."""
    layers = len(student_layers)
    masks = mask.repeat(layers, 1)
    teachers = [layer.attention.self for layer in teacher_layers]
    students = [layer.attention.self for layer in student_layers]
    head_dim = students[0].attention_head_size
    with torch.no_grad():
        q = stacked_heads(
            [a.query for a in teachers], hidden if queries is None else hidden[:, :, queries], head_dim
        )
        k = stacked_heads([a.key for a in teachers], hidden, head_dim)
        probs = softmax_probs(q, k, masks, teachers[0].scaling)
    q, k = (
        stacked_heads([getattr(a, name) for a in students], hidden, head_dim) for name in ("query", "key")
    )
    return student_weights_loss(students[0], q, k, probs, masks, groups=layers, queries=queries)


def resolve_loss(loss: str, variant: str, mix: str) -> str:
    """The layer loss to use for a student running ``variant`` (LLN+Diag ``mix`` mode): ``loss`` itself, or for
    ``"auto"`` the attention-weight KL where the variant has one attention distribution per query row and the
    output error where it has not (cheap linear attention: signed, unnormalised; a learnable LLN+Diag mix: one
    matrix per channel). ``ValueError`` for an explicit weight loss such a variant cannot take."""
    row_stochastic = get_variant(variant).row_stochastic
    single_distribution = row_stochastic and not (variant == "lln_diag" and mix != "average")
    if loss == "auto":
        return "weights" if single_distribution else "output"
    if loss in ("weights", "both") and not single_distribution:
        why = (
            f"lln_mix_mode={mix!r} mixes LLN and the diagonal blocks per channel"
            if row_stochastic
            else f"{variant!r} has none (its weights are signed and rows do not sum to one)"
        )
        raise ValueError(
            f"loss={loss!r} compares attention distributions, one per query row; {why}: use loss='output' or 'auto'"
        )
    return loss


def lln_log_features(q, k, mask, *, scale, stats, queries=None) -> tuple[torch.Tensor, torch.Tensor]:
    """LLN's log feature maps ``(alpha q, beta k)``: the query rows of ``queries`` (all where None; alpha and beta
    from every query) and every key, ``-inf`` at padded keys."""
    alpha, beta = lln_scales(q, k, mask, scale=scale, stats=stats)
    return alpha * _rows(q, queries), (beta * k).masked_fill(~mask[:, None, :, None], float("-inf"))


def lln_log_probs(q, k, mask, *, scale, stats, queries=None) -> torch.Tensor:
    """``log P`` of LLN, ``P_ij ∝ Σ_c exp(alpha q_ic) exp(beta k_jc)``, as a product of stabilised feature matrices
    (``hf_lln.ops.reference.lln_matrix`` states the same formula with an O(seq²·head_dim) logsumexp); only the rows
    of ``queries`` where given (alpha and beta still from every query)."""
    log_q, log_k = lln_log_features(q, k, mask, scale=scale, stats=stats, queries=queries)
    # Per-channel key maxima and per-row query maxima: constants of a row, so they cancel in the normalisation.
    key_max = log_k.amax(dim=2, keepdim=True).detach().clamp_min(torch.finfo(q.dtype).min)
    log_q = log_q + key_max
    query_max = log_q.amax(dim=-1, keepdim=True).detach()
    weights = torch.exp(log_q - query_max) @ torch.exp(log_k - key_max).transpose(-1, -2)
    # a row sum is at least 1 beside a real key, 0 in a sequence without one (rows then at TINY, not NaN)
    return torch.log((weights / weights.sum(dim=-1, keepdim=True).clamp_min(TINY)).clamp_min(TINY))


def attention_options(self_attention: torch.nn.Module) -> dict:
    """The operator options a student's self-attention module runs with (its variant's ``options`` from the
    config, per-layer ones included)."""
    row = VARIANTS[self_attention.config._attn_implementation]
    layer_index = getattr(self_attention, "layer_idx", None) or 0
    return row.options(lln_settings(self_attention.config), self_attention.attention_head_size, layer_index)


def student_log_probs(self_attention, q, k, mask, queries=None) -> torch.Tensor:
    """``log`` of the student's attention matrix ``(batch, heads, seq, seq)`` in float32, differentiable w.r.t.
    ``q, k: (batch, heads, seq, head_dim)``; masked keys get ``log(tiny)``, not ``-inf``. The matrix is the
    variant's (``hf_lln.variants``: its ``matrix`` with the options the attention function derives from the
    config, per-layer ones included), LLN's in the product form of ``lln_log_probs``. With ``queries: (count,)``
    only those query positions' rows, ``(batch, heads, count, seq)``: LLN and LLN+Diag compute only them, other
    variants the whole matrix."""
    row = VARIANTS[self_attention.config._attn_implementation]
    options = attention_options(self_attention)
    scale = {"scale": self_attention.scaling} if row.takes_scale else {}
    q, k = q.float(), k.float()
    with torch.autocast(q.device.type, enabled=False):
        if row.name == "lln":
            return lln_log_probs(q, k, mask, **scale, stats=options["stats"], queries=queries)
        if row.name == "lln_diag":  # the "average" mix; resolve_loss refuses the learnable ones
            lln = lln_log_probs(q, k, mask, **scale, stats=options["stats"], queries=queries).exp()
            diag = block_diag_matrix(q, k, mask, block_size=options["block_size"], **scale, queries=queries)
            return torch.log((0.5 * (lln + diag)).clamp_min(TINY))
        probs = _rows(row.matrix(q, k, mask, **scale, **row.matrix_options(options)), queries)
    return torch.log(probs.clamp_min(TINY))


def student_weights_loss(
    self_attention, q, k, teacher_probs, mask, *, groups: int | None = None, queries=None
) -> torch.Tensor:
    """``weights_loss(student_log_probs(self_attention, q, k, mask, queries), teacher_probs, mask, groups,
    queries)``: for LLN and LLN+Diag with its gradient written out (``hf_lln.transfer.weight_kl``), which takes
    about half the elementwise passes over the ``(batch, heads, rows, seq)`` matrices; for the other variants
    through autograd."""
    row = VARIANTS[self_attention.config._attn_implementation]
    if row.name not in ("lln", "lln_diag"):
        log_probs = student_log_probs(self_attention, q, k, mask, queries)
        return weights_loss(log_probs, teacher_probs, mask, groups=groups, queries=queries)
    options = attention_options(self_attention)
    q, k = q.float(), k.float()
    with torch.autocast(q.device.type, enabled=False):
        log_q, log_k = lln_log_features(
            q, k, mask, scale=self_attention.scaling, stats=options["stats"], queries=queries
        )
        diag = None
        if row.name == "lln_diag":  # the "average" mix; resolve_loss refuses the learnable ones
            diag = block_diag_matrix(
                q, k, mask, block_size=options["block_size"], scale=self_attention.scaling, queries=queries
            )
        return feature_kl(log_q, log_k, teacher_probs, mask, diag=diag, groups=groups, queries=queries)


def output_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Relative squared error ``Σ|s - t|² / Σ|t|²`` over the real tokens of ``student, teacher: (batch, seq, dim)``:
    0 for a perfect match, 1 for an output of zeros, comparable across layers and models."""
    weight = mask[..., None].to(teacher.dtype)
    return ((student - teacher) ** 2 * weight).sum() / ((teacher**2) * weight).sum().clamp_min(TINY)


def weights_loss(
    student_log_probs: torch.Tensor,
    teacher_probs: torch.Tensor,
    mask: torch.Tensor,
    groups: int | None = None,
    queries: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher ‖ student) of the attention rows, averaged over heads and real queries: Hedgehog's cross-entropy
    minus the teacher's entropy, so that a perfect match scores 0. Both ``(batch, heads, seq, seq)``, or
    ``(batch, heads, count, seq)``: the rows of the query positions ``queries: (count,)``; ``mask: (batch, seq)``.
    With ``groups``, the batch is that many equal parts (stacked layers) and the result one mean per part,
    ``(groups,)``."""
    keys = mask[:, None, None, :]
    kl = torch.where(
        keys,
        torch.special.xlogy(teacher_probs, teacher_probs) - teacher_probs * student_log_probs,
        torch.zeros((), device=teacher_probs.device),
    ).sum(dim=-1)
    # weights, not boolean indexing: indexing waits for the GPU to count the rows
    real_queries = mask if queries is None else mask[:, queries]
    rows = real_queries[:, None, :].expand_as(kl).to(kl.dtype).reshape(groups or 1, -1)
    return (
        (kl.reshape(groups or 1, -1) * rows)
        .sum(-1)
        .div(rows.sum(-1).clamp_min(1.0))
        .reshape(() if groups is None else -1)
    )


def layer_loss(loss: str, student, teacher, mask, queries=None) -> torch.Tensor:
    """The ``loss`` (one of ``LOSSES``) between ``student`` and ``teacher``, each ``(output, probs)`` as returned by
    ``student_attention`` / ``teacher_attention`` (their weights for the rows of ``queries``); "both" is the sum."""
    total = torch.zeros((), device=mask.device)
    if loss in ("output", "both"):
        total = total + output_loss(student[0], teacher[0], mask)
    if loss in ("weights", "both"):
        total = total + weights_loss(student[1], teacher[1], mask, queries=queries)
    return total


def hidden_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``output_loss`` of final hidden states ``(batch, seq, hidden)`` (the end-to-end stage's loss), in float32."""
    return output_loss(student.float(), teacher.float(), mask)


def pooled_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over sentences of the cosine between mean-pooled hidden states ``(batch, seq, hidden)``: the
    embedding measure of ``hf_lln.experiments.embedding_similarity``."""
    weight = mask[..., None].float()
    pool = [(x.float() * weight).sum(1) / weight.sum(1) for x in (student, teacher)]
    return F.cosine_similarity(*pool, dim=-1).mean()
