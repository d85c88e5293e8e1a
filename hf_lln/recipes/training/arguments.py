"""Command-line arguments every training script shares, and their early validation."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from hf_lln import variants
from hf_lln.recipes.training.checkpoint import find_checkpoint, run_arguments

MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16", "fp8")
# the Transformers schedules defined by warmup and total steps alone
SCHEDULER_CHOICES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the shared groups: run, optimisation, precision/memory, checkpointing, tracking, Hub.

    Flag names follow Transformers' ``*_no_trainer.py`` examples, so users' habits carry over.
    Defaults are chosen for a tiny CPU run; scripts may change them with ``parser.set_defaults``.
    """
    run = parser.add_argument_group("run")
    run.add_argument(
        "--output_dir", type=str, default=None, help="Where to write checkpoints, logs and the final model."
    )
    run.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Start a new run in a --output_dir that is not empty: its checkpoints and results are deleted "
        "first, its model replaced at the end. Without it such a folder is refused.",
    )
    run.add_argument(
        "--seed", type=int, default=42, help="Seed of initialisation, data order, masking and dropout."
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--per_device_train_batch_size", type=int, default=8)
    optim.add_argument("--per_device_eval_batch_size", type=int, default=8)
    optim.add_argument("--learning_rate", type=float, default=5e-5, help="Peak learning rate (after warmup).")
    optim.add_argument(
        "--weight_decay", type=float, default=0.0, help="AdamW decay; never applied to biases and norms."
    )
    optim.add_argument("--adam_beta1", type=float, default=0.9)
    optim.add_argument("--adam_beta2", type=float, default=0.999)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8)
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm; 0 disables.")
    optim.add_argument(
        "--lr_scheduler_type",
        default="linear",
        choices=SCHEDULER_CHOICES,
        help="Schedule after warmup (linear decay to zero by default).",
    )
    optim.add_argument(
        "--num_warmup_steps", type=int, default=0, help="Linear warmup steps (optimizer steps)."
    )
    optim.add_argument("--num_train_epochs", type=int, default=3)
    optim.add_argument(
        "--max_train_steps",
        type=int,
        default=None,
        help="Total optimizer steps; overrides --num_train_epochs.",
    )
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)

    memory = parser.add_argument_group("precision and memory")
    memory.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=MIXED_PRECISION_CHOICES,
        help="Overrides the accelerate config (accelerate launch --mixed_precision).",
    )
    memory.add_argument(
        "--gradient_checkpointing", action="store_true", help="Recompute activations in backward."
    )
    memory.add_argument(
        "--attn_implementation",
        type=str,
        default=None,
        help="Attention: a registered hf_lln variant (lln, lln_diag, ...) or a built-in one (sdpa, eager).",
    )

    evaluation = parser.add_argument_group("evaluation and logging")
    evaluation.add_argument(
        "--eval_steps",
        type=int,
        default=None,
        help="Evaluate every N optimizer steps (default: once per epoch).",
    )
    evaluation.add_argument(
        "--logging_steps", type=int, default=10, help="Log the training loss every N steps."
    )
    evaluation.add_argument(
        "--with_tracking", action="store_true", help="Log metrics to the trackers of --report_to."
    )
    evaluation.add_argument(
        "--report_to",
        type=str,
        default="tensorboard",
        help='Tracker(s) for --with_tracking: "tensorboard", "wandb", "comet_ml", "clearml", ... or "all".',
    )

    checkpointing = parser.add_argument_group("checkpointing")
    checkpointing.add_argument(
        "--checkpointing_steps",
        type=str,
        default=None,
        help='Save a resumable checkpoint every N optimizer steps ("N"), or at the end of each epoch ("epoch").',
    )
    checkpointing.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help='A checkpoint folder (output_dir/step_N), or "latest" for the newest one in --output_dir.',
    )

    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload the final output_dir to the Hub.")
    hub.add_argument(
        "--hub_model_id", type=str, default=None, help="Repository id (default: output_dir's name)."
    )
    hub.add_argument(
        "--hub_token", type=str, default=None, help="Token (default: the logged-in one / $HF_TOKEN)."
    )


def check_training_arguments(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the flag for every bad shared argument, before any work is done.

    Also turns ``args.checkpointing_steps`` into an ``int``, ``"epoch"`` or ``None`` and resolves
    ``args.resume_from_checkpoint`` (``"latest"`` included) into a checkpoint folder path of this run: one
    written with the same run-defining arguments (``checkpoint.run_arguments``), complete. Call it after the
    script's own checks, which may fill in defaults that define the run. A ``--output_dir`` that is not
    empty is refused unless the run resumes or ``--overwrite_output_dir`` is given.
    """
    if args.output_dir is None:
        raise ValueError("--output_dir is required: the folder for checkpoints, logs and the final model")
    for name, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name} must be a finite number, got {value}")
    if args.attn_implementation is not None:
        check_attn_implementation(args.attn_implementation)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name in ("num_train_epochs", "logging_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name in ("max_train_steps", "eval_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.weight_decay < 0 or args.num_warmup_steps < 0 or args.max_grad_norm < 0:
        raise ValueError("--weight_decay, --num_warmup_steps and --max_grad_norm must be non-negative")

    if args.checkpointing_steps is not None:
        if args.checkpointing_steps == "epoch":
            pass
        elif args.checkpointing_steps.isdigit() and int(args.checkpointing_steps) > 0:
            args.checkpointing_steps = int(args.checkpointing_steps)
        else:
            raise ValueError(
                f'--checkpointing_steps must be a positive integer or "epoch", got {args.checkpointing_steps!r}'
            )

    overwrite = getattr(args, "overwrite_output_dir", False)
    if overwrite and args.resume_from_checkpoint is not None:
        raise ValueError(
            "--overwrite_output_dir starts a new run and --resume_from_checkpoint continues one: give only one"
        )
    if args.resume_from_checkpoint is not None:
        args.resume_from_checkpoint = str(
            find_checkpoint(args.resume_from_checkpoint, Path(args.output_dir), run_arguments(args))
        )
    elif not overwrite:
        check_output_dir_unused(Path(args.output_dir))

    if args.push_to_hub:
        from huggingface_hub import get_token

        if args.hub_token is None and get_token() is None:
            raise ValueError(
                "--push_to_hub needs a Hugging Face token: pass --hub_token, set $HF_TOKEN or run `hf auth login`"
            )
        if args.hub_model_id is None:
            args.hub_model_id = os.path.basename(os.path.normpath(args.output_dir))


def check_output_dir_unused(output_dir: Path) -> None:
    """``ValueError`` when ``output_dir`` is a file or a folder that is not empty (as Transformers' example
    scripts do): a new run there would mix its files with another run's and replace that run's model."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder")
    entries = sorted(path.name for path in output_dir.iterdir()) if output_dir.is_dir() else []
    if entries:
        shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
        raise ValueError(
            f"--output_dir {output_dir} is not empty (it holds {shown}): pass --overwrite_output_dir to start a "
            "new run there (its checkpoints and results are deleted first), --resume_from_checkpoint latest to "
            "continue the run whose checkpoints it holds, or choose another --output_dir"
        )


def check_attn_implementation(name: str) -> None:
    """``ValueError`` for an ``--attn_implementation`` no model would accept, before any work is done: the names
    registered with Transformers' attention interface (hf_lln's variants, sdpa, flash and flex attention, and any a
    user registered), eager and Hub kernels (``org/repo``) pass; anything else gets the registry's message, which
    names hf_lln's variants and a close match."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    import hf_lln  # noqa: F401  (registers the hf_lln variants)

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if name in known or "/" in name or name.removeprefix("paged|") in known:
        return
    variants.check_attn_implementation(name, "--attn_implementation")


def check_model_source(flag: str, value: str | None) -> None:
    """``ValueError`` naming ``--flag`` when ``value`` is neither an existing path nor a valid Hub repo id (a
    missing local folder would otherwise get the Hub's "Repo id must be in the form ..." at load time)."""
    if value is None or Path(value).exists():
        return
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        raise ValueError(f"--{flag} {value}: no such file or folder (and not a Hub repo id)") from None
