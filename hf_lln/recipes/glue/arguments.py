"""The flags of ``hf_lln.recipes.run_glue`` beyond the shared training ones, their checks, and per-task arguments."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_lln.recipes.glue.tasks import GlueTask, resolve_task_names
from hf_lln.recipes.training import (
    check_model_source,
    check_training_arguments,
    latest_checkpoint,
    run_arguments,
)

DEFAULT_MAX_LENGTH = 128


def add_glue_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data and model groups (flag names as in Transformers' ``run_glue_no_trainer.py``)."""
    data = parser.add_argument_group("GLUE data")
    data.add_argument("--task_name", required=True, help="A GLUE task, a comma-separated list, all or paper.")
    data.add_argument(
        "--glue_dir", type=str, default=None, help="Folder in the GLUE layout (<TASK>/train.tsv ...)."
    )
    data.add_argument("--train_file", type=str, default=None, help="csv/json training file (one task only).")
    data.add_argument("--validation_file", type=str, default=None, help="csv/json validation file.")
    data.add_argument(
        "--test_file", type=str, default=None, help="csv/json test file (predicted, unlabelled)."
    )
    data.add_argument(
        "--max_train_samples",
        type=int,
        default=None,
        help="Train on a seeded random subset of this many rows.",
    )
    data.add_argument(
        "--max_length",
        type=int,
        default=None,
        help=f"Truncate inputs to this many tokens (default: {DEFAULT_MAX_LENGTH}, or the model's positions when fewer).",
    )
    data.add_argument("--pad_to_max_length", action="store_true", help="Pad every row to --max_length.")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model_name_or_path",
        help="Stock or LLN checkpoint (folder or Hub id); default: --teacher_model_name_or_path.",
    )
    model.add_argument(
        "--trust_remote_code", action="store_true", help="Allow a checkpoint's own modelling code."
    )
    model.add_argument(
        "--ignore_mismatched_sizes",
        action="store_true",
        help="Replace a classifier head of another label count.",
    )


def check_glue_arguments(args: argparse.Namespace) -> tuple[str, ...]:
    """The task names to run; ``ValueError`` naming the flag for bad GLUE arguments."""
    tasks = resolve_task_names(args.task_name)
    check_model_source("model_name_or_path", args.model_name_or_path)
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    if any(files.values()):
        if args.glue_dir is not None:
            raise ValueError("--glue_dir and --train_file/--validation_file/--test_file exclude each other")
        if len(tasks) > 1:
            raise ValueError(
                f"--train_file/--validation_file hold one task, but --task_name gives {list(tasks)}"
            )
        if args.train_file is None or args.validation_file is None:
            raise ValueError("--train_file and --validation_file go together")
    if args.glue_dir is not None and not Path(args.glue_dir).is_dir():
        raise ValueError(
            f"--glue_dir {args.glue_dir} is not a folder (expected <glue_dir>/<TASK>/train.tsv ...)"
        )
    for name in ("max_length", "max_train_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    if len(tasks) > 1 and args.resume_from_checkpoint not in (None, "latest"):
        raise ValueError(
            '--resume_from_checkpoint with several tasks must be "latest" (each task resumes its own)'
        )
    return tasks


def task_arguments(args: argparse.Namespace, task_name: str, several: bool) -> argparse.Namespace:
    """The run's arguments for one task: its own task name, and its own output folder (and Hub repo) when
    there are several; checked by ``check_training_arguments`` (output folder, resumed checkpoint).

    With several tasks, ``--resume_from_checkpoint latest`` resumes each task that has a checkpoint of its
    run and starts the others anew (in an unused folder)."""
    task_args = argparse.Namespace(**vars(args))
    task_args.task_name = task_name  # a task's run is defined by its own task, not by the list it came in
    if several:
        task_args.output_dir = str(Path(args.output_dir) / task_name)
        if args.hub_model_id is not None:
            task_args.hub_model_id = f"{args.hub_model_id}-{task_name}"
        if args.resume_from_checkpoint == "latest":
            found, _ = latest_checkpoint(Path(task_args.output_dir), run_arguments(task_args))
            if found is None:
                task_args.resume_from_checkpoint = None
    check_training_arguments(task_args)
    return task_args


def data_files(task: GlueTask, args: argparse.Namespace) -> dict[str, str] | None:
    """``--train_file/--validation_file/--test_file`` as the task's splits (MNLI: the matched ones)."""
    if args.train_file is None:
        return None
    files = {"train": args.train_file, task.validation_splits[0]: args.validation_file}
    if args.test_file is not None:
        files[task.test_splits[0]] = args.test_file
    return files
