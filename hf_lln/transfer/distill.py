"""Distillation of a teacher into a student during fine-tuning: its predictions, and optionally its hidden
states layer by layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_lln.transfer.matching import hidden_loss


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    task_loss: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    regression: bool,
) -> torch.Tensor:
    """``(1 - alpha)·task_loss + alpha·D`` with ``D`` = ``T²·KL(softmax(teacher/T) ‖ softmax(student/T))`` for
    classification logits ``(batch, labels)`` (the ``T²`` keeps its gradients on the task loss's scale, as in
    Hinton et al.) or the mean squared error of regression outputs ``(batch, 1)``. Computed in float32."""
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    if regression:
        distill = F.mse_loss(student_logits, teacher_logits)
    else:
        distill = temperature**2 * F.kl_div(
            F.log_softmax(student_logits / temperature, dim=-1),
            F.log_softmax(teacher_logits / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
    return (1 - alpha) * task_loss.float() + alpha * distill


def layers_loss(
    student_states: tuple[torch.Tensor, ...], teacher_states: tuple[torch.Tensor, ...], mask: torch.Tensor
) -> torch.Tensor:
    """Mean over encoder layers of the relative squared error of each layer's output (``hidden_loss``), float32.
    ``student_states, teacher_states``: a model's ``hidden_states``, ``layers + 1`` of ``(batch, seq, hidden)``, the
    embeddings' output first (not compared: no attention has run on it); ``mask: (batch, seq)`` bool, the real
    tokens. What the end-to-end transfer stage matches, and what fine-tuning with ``distill_hidden_weight`` adds."""
    if len(student_states) != len(teacher_states):
        raise ValueError(
            f"student and teacher must have as many hidden states, got {len(student_states)} and "
            f"{len(teacher_states)}"
        )
    pairs = zip(student_states[1:], teacher_states[1:], strict=True)
    return torch.stack([hidden_loss(student, teacher, mask) for student, teacher in pairs]).mean()


def distillation_objective(
    student_output,
    teacher_output,
    attention_mask: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    regression: bool,
    hidden_weight: float = 0.0,
) -> torch.Tensor:
    """The fine-tuning loss of a distilled student: ``distillation_loss`` of the two classifier outputs (the
    student's holds its task loss, from ``labels``) plus ``hidden_weight`` × ``layers_loss`` of their hidden
    states (both run with ``output_hidden_states=True`` where ``hidden_weight`` > 0); ``attention_mask: (batch,
    seq)``."""
    loss = distillation_loss(
        student_output.logits,
        teacher_output.logits,
        student_output.loss,
        alpha=alpha,
        temperature=temperature,
        regression=regression,
    )
    if hidden_weight:
        if student_output.hidden_states is None or teacher_output.hidden_states is None:
            raise ValueError("hidden_weight > 0 needs both models run with output_hidden_states=True")
        loss = loss + hidden_weight * layers_loss(
            student_output.hidden_states, teacher_output.hidden_states, attention_mask.bool()
        )
    return loss
