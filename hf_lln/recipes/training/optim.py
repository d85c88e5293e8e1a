"""AdamW with decay only on weight matrices, and the warmup + decay learning-rate schedule."""

from __future__ import annotations

import argparse

import torch
from transformers import get_scheduler


def decay_parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weights with ``weight_decay``, biases and normalisation parameters without.

    A parameter is exempt when it is a bias or belongs to a normalisation layer (LayerNorm, RMSNorm,
    ...), found by the module's class name (LayerNorm, RMSNorm, GroupNorm, ...), whatever the attribute is called.
    """
    no_decay: set[str] = set()
    for module_name, module in model.named_modules():
        is_norm = "norm" in type(module).__name__.lower()
        for param_name, _ in module.named_parameters(recurse=False):
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            if is_norm or param_name == "bias":
                no_decay.add(full_name)
    decay_params, no_decay_params = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay_params if name in no_decay else decay_params).append(param)
    return [
        {"params": decay_params, "weight_decay": weight_decay},
        {"params": no_decay_params, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: torch.nn.Module, args: argparse.Namespace, device: torch.device | str = "cpu"
) -> torch.optim.AdamW:
    """AdamW over :func:`decay_parameter_groups` with the ``--learning_rate/--adam_*`` flags, for training on
    ``device`` (the accelerator's; the model may still be on the CPU).

    On CUDA it is PyTorch's fused AdamW (one kernel for all parameters instead of a dozen multi-tensor
    launches), as Transformers' Trainer defaults to: less host time in a step that the host's launches decide
    (``docs/benchmark.md``). Elsewhere PyTorch's default implementation.
    """
    return torch.optim.AdamW(
        decay_parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        fused=torch.device(device).type == "cuda" or None,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, args: argparse.Namespace, num_training_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """``--num_warmup_steps`` of linear warmup, then ``--lr_scheduler_type`` (linear decay to 0 by default).

    Counted in optimizer steps: the training loop steps it once per optimizer step.
    """
    return get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=args.num_warmup_steps,
        num_training_steps=num_training_steps,
    )
