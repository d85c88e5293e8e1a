"""Accelerator, logging, seeding and trackers for a training script."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import set_seed

from hf_lln.recipes.training.checkpoint import CHECKPOINT_PATTERN

logger = logging.getLogger(__name__)

# What a run leaves in its output folder besides the model: replaced by a new run with --overwrite_output_dir
RUN_RECORDS = ("all_results.json", "log_history.json")


def make_accelerator(args: argparse.Namespace, project_name: str) -> Accelerator:
    """Build the Accelerator from the shared flags, set up logging and the seed, create ``--output_dir``.

    Data order comes from accelerate's seedable sampler (seed ``--seed`` + epoch), so every process
    reads the same permutation and a resumed run reads the same batches. The learning-rate scheduler
    is stepped by the training loop once per optimizer step (``step_scheduler_with_optimizer=False``).
    With ``--with_tracking`` the trackers of ``--report_to`` are started under ``project_name`` with
    the run's arguments as hyper-parameters (TensorBoard logs go to ``output_dir/project_name``).
    With ``--overwrite_output_dir`` the checkpoints and results of the run that used the folder before are
    deleted first, so that neither ``--resume_from_checkpoint latest`` nor a reader takes them for this run's.
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
        if getattr(args, "overwrite_output_dir", False):
            clear_previous_run(Path(args.output_dir))
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.init_trackers(project_name, config=tracker_config(args))
    return accelerator


def clear_previous_run(output_dir: Path) -> None:
    """Delete the checkpoints (``step_N``, ``.step_N.tmp``) and results files of an earlier run in ``output_dir``."""
    if not output_dir.is_dir():
        return
    removed = []
    for path in sorted(output_dir.iterdir()):
        name = path.name.removeprefix(".").removesuffix(".tmp")
        if path.is_dir() and CHECKPOINT_PATTERN.match(name):
            shutil.rmtree(path)
        elif path.is_file() and path.name in RUN_RECORDS:
            path.unlink()
        else:
            continue
        removed.append(path.name)
    if removed:
        logger.warning(
            "--overwrite_output_dir: deleted the earlier run's %s from %s", ", ".join(removed), output_dir
        )


@contextlib.contextmanager
def removed_on_failure(output_dir: str | Path) -> Iterator[None]:
    """Leave no half-made output folder behind when the block fails.

    If ``output_dir`` did not exist or was empty when the block started, and the block raises (an error,
    Ctrl-C) before a checkpoint (``step_N``) or model weights (``*.safetensors``) are in the folder, the
    main process removes what the run put there (a trained tokenizer, tracker logs), so that running again
    does not meet a non-empty folder. A folder holding a checkpoint or weights is kept for ``--resume_from_checkpoint``.
    """
    path = Path(output_dir)
    existed = path.is_dir()
    fresh = not path.exists() or (existed and not any(path.iterdir()))
    try:
        yield
    except BaseException:
        if fresh and path.is_dir() and not _holds_work(path) and PartialState().is_main_process:
            if existed:
                for child in path.iterdir():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            else:
                shutil.rmtree(path, ignore_errors=True)
            logger.info(
                "the run failed before writing a checkpoint or model: removed what it wrote in %s", path
            )
        raise


def _holds_work(path: Path) -> bool:
    """Whether a failed run's folder holds something worth keeping: a checkpoint or weights, at any depth."""
    for child in path.rglob("*"):
        if (child.is_dir() and CHECKPOINT_PATTERN.match(child.name)) or child.suffix == ".safetensors":
            return True
    return False


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
