"""Fine-tuned conversion in ``hf_lln.recipes.run_glue``: a softmax teacher fine-tuned on the task, a student with its
weights and a linear attention, attention transfer on the task's training inputs (``hf_lln.transfer``), then
fine-tuning with the task loss plus distillation of the teacher's predictions and of every layer's hidden states.

    python -m hf_lln.recipes.run_glue --task_name mrpc --teacher_model_name_or_path runs/minilm-mrpc \\
        --attn_implementation lln --output_dir runs/minilm-mrpc-lln

``--model_name_or_path`` defaults to the teacher. Everything about the teacher is checked before any data is
read: one task, a linear student attention, a softmax BERT/RoBERTa teacher with this task's labels (Transformers
5 does not save ``finetuning_task``, so two tasks with the same label names, such as RTE and QNLI, pass). The
student is loaded as the LLN class of ``--attn_implementation`` (``load_classifier``), so it saves and reloads with
its attention, and loads as remote code without hf_lln.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoConfig, AutoModelForSequenceClassification

from hf_lln.models.configuration_lln import LLN_MODEL_TYPES, is_lln_config, lln_settings
from hf_lln.recipes.glue.finetune import predict
from hf_lln.recipes.glue.tasks import GlueTask
from hf_lln.recipes.training import check_model_source
from hf_lln.transfer import (
    END_TO_END_LOSSES,
    END_TO_END_TRAIN,
    TRAIN_MODES,
    TransferReport,
    TransferSettings,
    distillation_objective,
    transfer_attention,
)
from hf_lln.transfer.loop import MODEL_TYPES
from hf_lln.transfer.matching import LOSSES, resolve_loss
from hf_lln.transfer.options import add_flags
from hf_lln.variants import ATTENTION_VARIANTS

TEACHER_MODEL_TYPES = tuple(LLN_MODEL_TYPES)  # the stock families: softmax checkpoints
_TRANSFER = TransferSettings()
# Every default of the fine-tuned conversion; the transfer's own come from TransferSettings, except its steps and
# layer-stage rate and batch size, which are this recipe's (on the task's inputs, before fine-tuning). From the
# fifth study (docs/quality.md; arm transfer-lr3e-3+distill-hidden3): 300 layer steps of 32 inputs at 3e-3 and no
# end-to-end stage, the fine-tuning distilling every layer's hidden states with weight 3 in its place. Through this
# recipe on MRPC (3 seeds) LLN keeps 95.3% of the teacher's score and LLN+Diag 99.5%; 100 layer steps keep 93.7%
# and 98.7%, 600 no more than 300. The transfer then took about half the fine-tuning's time on an H200 (8.3 s
# against 16.2 s); with its layer steps replayed from CUDA graphs (seventh study) 0.21-0.31 of it on MRPC.
# The earlier default (900 layer steps at 1e-3, 300 end-to-end steps, no hidden distillation) keeps 96.8% and
# 100.7% for 2.3 times the fine-tuning's time; a distillation weight of 0.9, another fine-tuning rate, or both
# layer losses did no better. The sixth study: 150 steps of 64 or 75 of 128 cost LLN 0.6 and 2.3 points; a half or
# a quarter of the query rows moves the scores by less than the seeds' spread but fits the held-out attention less
# well, as fewer steps do, so every row is compared.
DEFAULTS = {
    "distill_alpha": 0.5,
    "distill_temperature": 2.0,
    "distill_hidden_weight": 3.0,
    "transfer_steps": 300,
    "transfer_end_to_end_steps": 0,
    "transfer_learning_rate": 3e-3,
    "transfer_batch_size": 32,
    "transfer_query_fraction": _TRANSFER.query_fraction,
    "transfer_train": _TRANSFER.train,
    "transfer_loss": _TRANSFER.loss,
    "transfer_end_to_end_loss": _TRANSFER.end_to_end_loss,
    "transfer_end_to_end_train": _TRANSFER.end_to_end_train,
    "transfer_end_to_end_learning_rate": _TRANSFER.end_to_end_learning_rate,
}

# flag -> (type or choices, help); every one needs --teacher_model_name_or_path
_FLAGS = {
    "distill_alpha": (float, "Weight of the distillation loss, 1 - weight of the task loss"),
    "distill_temperature": (float, "Softmax temperature of the logit distillation"),
    "distill_hidden_weight": (
        float,
        "Weight of the distillation of the teacher's hidden states, every layer's output (0: none)",
    ),
    "transfer_steps": (
        int,
        "Attention-transfer steps on the training inputs before fine-tuning, layer by layer",
    ),
    "transfer_end_to_end_steps": (int, "Then steps matching the teacher's hidden states end to end"),
    "transfer_learning_rate": (float, "Learning rate of the layer-by-layer steps"),
    "transfer_batch_size": (int, "Training inputs per transfer step"),
    "transfer_query_fraction": (
        float,
        "Share of the query rows the layer-by-layer weight loss compares at each step",
    ),
    "transfer_train": (TRAIN_MODES, "Attention parameters the layer-by-layer steps train"),
    "transfer_loss": (LOSSES, "Transfer's layer loss"),
    "transfer_end_to_end_loss": (END_TO_END_LOSSES, "What the end-to-end steps match"),
    "transfer_end_to_end_train": (END_TO_END_TRAIN, "Parameters the end-to-end steps train"),
    "transfer_end_to_end_learning_rate": (float, "Learning rate of the end-to-end steps"),
}


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--teacher_model_name_or_path`` group; its other flags need a teacher."""
    group = parser.add_argument_group(
        "fine-tuned conversion",
        "Distil a softmax model fine-tuned on the task into a linear-attention student.",
    )
    group.add_argument(
        "--teacher_model_name_or_path",
        help="Softmax BERT/RoBERTa fine-tuned on this task (folder or Hub id); the student starts from its "
        "weights (or --model_name_or_path's) with --attn_implementation.",
    )
    add_flags(group, _FLAGS, DEFAULTS)


def _config(flag: str, path: str, args: argparse.Namespace):
    check_model_source(flag, path)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=args.trust_remote_code)
    except OSError as error:
        raise ValueError(f"--{flag} {path}: cannot load its config: {error}") from None


def check_teacher_arguments(args: argparse.Namespace, task: GlueTask | None) -> None:
    """Fill in the defaults and raise ``ValueError`` naming the flag for a bad teacher setup, before any work.

    ``task`` is the run's only task (None when ``--task_name`` gives several). Without a teacher, its flags
    must be absent and ``--model_name_or_path`` given.
    """
    teacher = args.teacher_model_name_or_path
    given = [name for name in DEFAULTS if getattr(args, name) is not None]
    if teacher is None:
        if given:
            raise ValueError(f"{', '.join('--' + n for n in given)} need --teacher_model_name_or_path")
        if args.model_name_or_path is None:
            raise ValueError(
                "--model_name_or_path is required (or --teacher_model_name_or_path to start from)"
            )
        return
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if task is None:
        raise ValueError("--teacher_model_name_or_path is fine-tuned on one task: give --task_name one task")
    if args.model_name_or_path is None:
        args.model_name_or_path = teacher
    if not 0.0 <= args.distill_alpha <= 1.0:
        raise ValueError(f"--distill_alpha must be in [0, 1], got {args.distill_alpha}")
    if not args.distill_temperature > 0:
        raise ValueError(f"--distill_temperature must be > 0, got {args.distill_temperature}")
    if not args.distill_hidden_weight >= 0:
        raise ValueError(f"--distill_hidden_weight must be >= 0, got {args.distill_hidden_weight}")
    for flag in ("transfer_steps", "transfer_end_to_end_steps"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag} must be an integer >= 0, got {getattr(args, flag)}")
    if args.transfer_batch_size < 1:
        raise ValueError(f"--transfer_batch_size must be an integer >= 1, got {args.transfer_batch_size}")
    if not 0 < args.transfer_query_fraction <= 1:
        raise ValueError(f"--transfer_query_fraction must be in (0, 1], got {args.transfer_query_fraction}")
    for flag in ("transfer_learning_rate", "transfer_end_to_end_learning_rate"):
        if not getattr(args, flag) > 0:
            raise ValueError(f"--{flag} must be > 0, got {getattr(args, flag)}")
    student_config = _config("model_name_or_path", args.model_name_or_path, args)
    if student_config.model_type not in MODEL_TYPES:
        raise ValueError(
            f"--model_name_or_path must be a BERT or RoBERTa checkpoint (model_type one of {', '.join(MODEL_TYPES)}) "
            f"to be converted, got model_type {student_config.model_type!r}"
        )
    lln_variant = student_config.lln_variant if is_lln_config(student_config) else None
    student_attention = args.attn_implementation or lln_variant
    if student_attention not in ATTENTION_VARIANTS:
        raise ValueError(
            f"--teacher_model_name_or_path distils softmax attention into a linear one: --attn_implementation must "
            f"be one of {', '.join(ATTENTION_VARIANTS)}, got {student_attention!r}"
        )
    args.attn_implementation = student_attention
    if args.transfer_steps:
        resolve_loss(args.transfer_loss, student_attention, lln_settings(student_config)["lln_mix_mode"])
    config = _config("teacher_model_name_or_path", teacher, args)
    if config.model_type not in TEACHER_MODEL_TYPES:
        raise ValueError(
            f"--teacher_model_name_or_path must be a softmax BERT or RoBERTa checkpoint (model_type "
            f"{' or '.join(TEACHER_MODEL_TYPES)}), got model_type {config.model_type!r}"
        )
    # Transformers 5 no longer saves finetuning_task: where it is absent, the labels below are the check.
    finetuned_on = getattr(config, "finetuning_task", None)
    if finetuned_on not in (None, task.name):
        raise ValueError(
            f"--teacher_model_name_or_path was fine-tuned on {finetuned_on!r}, not on {task.name!r}"
        )
    labels = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
    expected = ["LABEL_0"] if task.is_regression else list(task.label_names)
    if config.num_labels != task.num_labels or (not task.is_regression and labels != expected):
        raise ValueError(
            f"--teacher_model_name_or_path must predict {task.name}'s {task.num_labels} label(s) "
            f"{expected if not task.is_regression else '(one regression score)'}; it has {config.num_labels}: "
            f"{labels}"
        )


def load_teacher(args: argparse.Namespace, accelerator: Accelerator) -> torch.nn.Module:
    """The teacher classifier with softmax attention, frozen, in eval mode, on the accelerator's device."""
    teacher = AutoModelForSequenceClassification.from_pretrained(
        args.teacher_model_name_or_path,
        attn_implementation="sdpa",
        dtype=torch.float32,
        trust_remote_code=args.trust_remote_code,
    )
    return teacher.to(accelerator.device).eval().requires_grad_(False)


def transfer_on_task(
    accelerator: Accelerator, teacher, student, train_batches, args: argparse.Namespace, task: GlueTask
) -> TransferReport | None:
    """Attention transfer on the task's training batches, ``train_batches`` (of ``--transfer_batch_size``;
    ``--transfer_steps`` layer by layer, then ``--transfer_end_to_end_steps``; None when both are 0)."""
    if args.transfer_steps + args.transfer_end_to_end_steps == 0:
        return None
    settings = TransferSettings(
        steps=args.transfer_steps,
        end_to_end_steps=args.transfer_end_to_end_steps,
        learning_rate=args.transfer_learning_rate,
        train=args.transfer_train,
        loss=args.transfer_loss,
        end_to_end_loss=args.transfer_end_to_end_loss,
        end_to_end_train=args.transfer_end_to_end_train,
        end_to_end_learning_rate=args.transfer_end_to_end_learning_rate,
        query_fraction=args.transfer_query_fraction,
        seed=args.seed,
    )
    return transfer_attention(
        teacher,
        student,
        train_batches,
        settings,
        accelerator=accelerator,
        source=f"the {task.name} training inputs",
    )


def distillation_compute_loss(accelerator: Accelerator, teacher, args: argparse.Namespace, task: GlueTask):
    """``compute_loss(model, batch)`` for ``hf_lln.recipes.training.train``: task loss plus distillation of the
    teacher's logits and, with ``--distill_hidden_weight``, of its hidden states
    (``hf_lln.transfer.distill.distillation_objective``)."""
    hidden = args.distill_hidden_weight > 0

    def compute_loss(model, batch):
        output = model(**batch, output_hidden_states=hidden)
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        with torch.no_grad(), accelerator.autocast():
            teacher_output = teacher(**inputs, output_hidden_states=hidden)
        mask = batch.get("attention_mask")
        return distillation_objective(
            output,
            teacher_output,
            torch.ones_like(batch["input_ids"]) if mask is None else mask,
            alpha=args.distill_alpha,
            temperature=args.distill_temperature,
            regression=task.is_regression,
            hidden_weight=args.distill_hidden_weight,
        )

    return compute_loss


def teacher_predictions(
    accelerator: Accelerator, teacher, dataloaders, task: GlueTask
) -> dict[str, np.ndarray]:
    """The frozen teacher's predictions of each validation split, computed once for every evaluation's
    ``teacher_agreement`` (``evaluate_splits``)."""
    return {
        split: predict(accelerator, teacher, dataloader, task, desc=f"teacher {split}")[0]
        for split, dataloader in dataloaders.items()
    }


def teacher_summary(args: argparse.Namespace, report: TransferReport | None) -> str:
    """The model card's paragraph on the teacher, the transfer and the distillation."""
    transfer = "\n\n" + report.summary() if report is not None else " No attention transfer."
    teacher = args.teacher_model_name_or_path
    # never a local path: the card is published (as card_fields does for the model)
    named = f"`{Path(teacher).resolve().name}` (a local folder)" if Path(teacher).exists() else teacher
    return (
        f"\n\nConverted from the fine-tuned softmax teacher {named} and fine-tuned with "
        f"distillation of its predictions (alpha {args.distill_alpha:g}, temperature {args.distill_temperature:g})"
        + (
            f" and of every layer's hidden states (weight {args.distill_hidden_weight:g})."
            if args.distill_hidden_weight
            else "."
        )
        + transfer
    )
