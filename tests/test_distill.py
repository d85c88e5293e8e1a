"""hf_lln.transfer.distill: the losses of a distilled fine-tuning, against formulas written out here."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from hf_lln.models import AUTO_MODEL_CLASSES
from hf_lln.transfer import distillation_loss, distillation_objective, layers_loss
from tests._tiny import TINY
from tests.test_transfer import random_batches, sharpen


def reference_layer_errors(student_states, teacher_states, mask):
    """Each encoder layer's ``Σ|s - t|² / Σ|t|²`` over the real tokens, the embeddings' output left out."""
    weight = mask[..., None].float()
    return [
        (((s - t) ** 2 * weight).sum() / (t**2 * weight).sum()).item()
        for s, t in zip(student_states[1:], teacher_states[1:], strict=True)
    ]


def test_distillation_loss_is_the_tempered_kl_or_the_mse():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 3, generator=generator).unbind()
    task = torch.tensor(0.7)
    temperature, alpha = 2.0, 0.25
    kl = 0.0
    for s, t in zip(student.tolist(), teacher.tolist(), strict=True):
        p = [math.exp(x / temperature) for x in t]
        q = [math.exp(x / temperature) for x in s]
        p, q = [x / sum(p) for x in p], [x / sum(q) for x in q]
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = (1 - alpha) * 0.7 + alpha * temperature**2 * kl / len(student)
    got = distillation_loss(student, teacher, task, alpha=alpha, temperature=temperature, regression=False)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got = distillation_loss(
        student[:, :1], teacher[:, :1], task, alpha=alpha, temperature=9.0, regression=True
    )
    mse = sum((s - t) ** 2 for s, t in zip(student[:, 0].tolist(), teacher[:, 0].tolist(), strict=True)) / 5
    assert got.item() == pytest.approx((1 - alpha) * 0.7 + alpha * mse, rel=1e-5)


def tiny_classifiers():
    """A softmax teacher classifier and an LLN student with its weights."""
    torch.manual_seed(0)
    teacher = sharpen(
        BertForSequenceClassification(BertConfig(**TINY, num_labels=2, attn_implementation="sdpa"))
    )
    classes = AUTO_MODEL_CLASSES["lln_bert"]
    student = classes["AutoModelForSequenceClassification"](
        classes["AutoConfig"](**TINY, num_labels=2, lln_variant="lln")
    )
    student.load_state_dict(teacher.state_dict())
    return teacher.eval(), student.eval()


def test_layers_loss_skips_the_embeddings_and_checks_the_depth():
    teacher, student = tiny_classifiers()
    batch = random_batches(count=1)[0]
    with torch.no_grad():
        ours = student(**batch, output_hidden_states=True).hidden_states
        theirs = teacher(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    errors = reference_layer_errors(ours, theirs, mask)
    assert len(errors) == TINY["num_hidden_layers"] and min(errors) > 0
    assert layers_loss(ours, theirs, mask).item() == pytest.approx(sum(errors) / len(errors), rel=1e-5)
    # the embeddings' output (state 0) is not compared; padded positions are not either
    moved = (ours[0] + 1.0, *ours[1:])
    padded = tuple(state.masked_fill(~mask[..., None], 5.0) for state in ours)
    for other in (moved, padded):
        assert layers_loss(other, theirs, mask).item() == pytest.approx(sum(errors) / len(errors), rel=1e-5)
    with pytest.raises(ValueError, match="as many hidden states, got 2 and 3"):
        layers_loss(ours[:2], theirs[:3], mask)


def test_distillation_objective_adds_the_weighted_hidden_state_error():
    teacher, student = tiny_classifiers()
    batch = {**random_batches(count=1)[0], "labels": torch.tensor([0, 1, 1, 0])}
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        ours = student(**batch, output_hidden_states=True)
        theirs = teacher(**inputs, output_hidden_states=True)
    options = dict(alpha=0.5, temperature=2.0, regression=False)
    base = distillation_loss(ours.logits, theirs.logits, ours.loss, **options).item()
    mask = batch["attention_mask"]
    assert distillation_objective(ours, theirs, mask, **options).item() == pytest.approx(base, rel=1e-6)
    errors = reference_layer_errors(ours.hidden_states, theirs.hidden_states, mask.bool())
    got = distillation_objective(ours, theirs, mask, **options, hidden_weight=3.0).item()
    assert got == pytest.approx(base + 3.0 * sum(errors) / len(errors), rel=1e-5)
    assert got > base
    with torch.no_grad():
        without_states = teacher(**inputs)
    with pytest.raises(ValueError, match="output_hidden_states=True"):
        distillation_objective(ours, without_states, mask, **options, hidden_weight=1.0)
