"""Accelerator, logging, seeding and trackers for a training script."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed


def make_accelerator(args: argparse.Namespace, project_name: str) -> Accelerator:
    """Build the Accelerator from the shared flags, set up logging and the seed, create ``--output_dir``.

    Data order comes from accelerate's seedable sampler (seed ``--seed`` + epoch), so every process
    reads the same permutation and a resumed run reads the same batches. The learning-rate scheduler
    is stepped by the training loop once per optimizer step (``step_scheduler_with_optimizer=False``).
    With ``--with_tracking`` the trackers of ``--report_to`` are started under ``project_name`` with
    the run's arguments as hyper-parameters (TensorBoard logs go to ``output_dir/project_name``).
    """
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to if args.with_tracking else None,
        project_dir=args.output_dir,
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    configure_logging(accelerator)
    set_seed(args.seed)
    if accelerator.is_main_process:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.init_trackers(project_name, config=tracker_config(args))
    return accelerator


def configure_logging(accelerator: Accelerator) -> None:
    """INFO logs on the main process; errors only elsewhere, so N processes do not print N times."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        logging.getLogger().setLevel(logging.ERROR)
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()


def tracker_config(args: argparse.Namespace) -> dict[str, int | float | str | bool]:
    """The arguments as tracker hyper-parameters (TensorBoard accepts only scalars and strings)."""
    config = {}
    for key, value in vars(args).items():
        if value is None or isinstance(value, int | float | str | bool):
            config[key] = "" if value is None else value
        else:
            config[key] = str(value)
    return config


def model_init_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for ``from_pretrained``/``from_config`` from the shared flags (``attn_implementation``).

    Weights are always created in float32: Transformers 5 loads a checkpoint in its stored dtype by default, and
    a bf16/fp16 checkpoint trained in its own dtype has no float32 master weights (fp16 overflows to NaN at once);
    ``--mixed_precision`` is how training runs in half precision.
    """
    kwargs = {"dtype": torch.float32}
    if args.attn_implementation is not None:
        kwargs["attn_implementation"] = args.attn_implementation
    return kwargs


def apply_memory_options(model: torch.nn.Module, args: argparse.Namespace) -> None:
    """Enable ``--gradient_checkpointing``; raise ``ValueError`` if the model cannot do it."""
    if not args.gradient_checkpointing:
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"--gradient_checkpointing: {type(model).__name__} does not support gradient checkpointing"
        )
    model.gradient_checkpointing_enable()
