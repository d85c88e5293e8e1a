"""Distillation of a teacher's predictions into a student during fine-tuning."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
