"""The runs of a comparison: its folders and every command, in launch order.

Two tracks, each a list of :class:`Run` (a subprocess of ``hf_lln.recipes.run_mlm``, ``hf_lln.recipes.run_glue``
or ``hf-lln convert``, each run as a module so that an installed package is enough), in stages (``convert``,
``pretrain``, ``finetune``):

- ``scratch``: ``run_mlm`` pretrains a RoBERTa preset from scratch per arm (``scratch/<arm>/mlm``), then
  ``run_glue`` fine-tunes it once per seed (``scratch/<arm>/glue/seed_<s>/<task>``);
- ``converted``: ``hf-lln convert`` turns a real softmax BERT into each attention (``converted/<arm>/model``; the
  softmax arm uses the checkpoint itself), ``run_mlm`` optionally adapts it with a short MLM run (a new MLM
  head on the encoder; ``converted/<arm>/mlm``), and ``run_glue`` fine-tunes it as above.

A run whose folder already holds its results (``all_results.json``; for a conversion, the converted folder) has
finished; pretraining with ``checkpointing_steps`` resumes inside the run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from hf_lln.experiments.compare.arms import Arm, arm_config, make_arms
from hf_lln.experiments.compare.data import prepare_train_file
from hf_lln.experiments.compare.scales import PRETRAIN_SEED, SCALES, Scale
from hf_lln.recipes.training import find_checkpoint

# the recipes run as modules ("python -m", "accelerate launch -m"): no file of a checkout is needed
RUN_MLM = "hf_lln.recipes.run_mlm"
RUN_GLUE = "hf_lln.recipes.run_glue"
RESULTS_FILE = "all_results.json"
TRACKS = ("scratch", "converted")
TRACK_TITLES = {
    "scratch": "pretrained from scratch",
    "converted": "converted from a pretrained softmax checkpoint",
}
STAGES = ("convert", "pretrain", "finetune")


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
    """Every run of the comparison, in launch order (``args`` as checked by ``arguments.check_arguments``)."""
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
        data_flags = []  # run_mlm's bundled corpus
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
        return (*launcher, "-m", RUN_MLM, *flags, *shlex.split(args.mlm_args))

    for track in comparison.tracks:
        for arm in comparison.arms:
            prefix = f"{track}-{arm.name}"
            model_needs: tuple[str, ...] = ()
            if track == "converted" and not arm.is_softmax:
                convert = (
                    sys.executable, "-m", "hf_lln.cli", "convert", str(args.softmax_checkpoint),
                    str(comparison.converted_dir(arm)), "--variant", arm.attention, *arm.convert_flags,
                )  # fmt: skip
                comparison.runs.append(
                    Run(f"{prefix}-convert", "convert", convert, (comparison.converted_dir(arm),))
                )
                model_needs = (f"{prefix}-convert",)
            if comparison.has_mlm(track):
                mlm_dir = comparison.mlm_dir(track, arm)
                if track == "scratch":
                    model_flags = ["--config_name", arm_config(args.output_dir, scale.config_name, arm)]
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
    """One ``run_glue`` process for the tasks of one model and seed still without results.

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
        *launcher, "-m", RUN_GLUE, "--model_name_or_path", str(comparison.finetuned_model(track, arm)),
        "--attn_implementation", arm.attention, "--task_name", ",".join(missing or comparison.tasks),
        "--output_dir", str(output_dir), *glue_data_flags, "--seed", str(seed),
        "--per_device_train_batch_size", str(scale.glue_batch_size), "--learning_rate", str(lr), *length,
        "--num_warmup_steps", str(scale.glue_warmup_steps), "--mixed_precision", scale.mixed_precision,
        "--overwrite_output_dir", *shlex.split(glue_args),
    )  # fmt: skip
    return Run(f"{track}-{arm.name}-glue-seed_{seed}", "finetune", command, outputs, needs)
