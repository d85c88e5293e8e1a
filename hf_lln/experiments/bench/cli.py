"""``hf-lln bench``: the command line of :func:`~hf_lln.experiments.bench.run.run_benchmark`.

Flags are :class:`~hf_lln.experiments.bench.config.BenchConfig`'s fields; lists are space-separated, as in
Transformers' example scripts (``--seq_lengths 512 1024 --dtypes fp32 bf16``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_lln.experiments import bench
from hf_lln.experiments.bench.config import MODEL_SIZES, PASSES, SUITES, BenchConfig
from hf_lln.experiments.bench.output import CSV_NAME, markdown_tables
from hf_lln.experiments.bench.run import run_benchmark


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``hf-lln bench``."""
    defaults = BenchConfig(output_dir=Path("runs/bench"))
    parser = subparsers.add_parser(
        "bench",
        help="time and peak memory of attention ops and whole encoders against sequence length",
        description=bench.__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--output_dir", type=Path, required=True, help="folder for benchmark.csv, benchmark.md and the plots"
    )
    parser.add_argument(
        "--device", default=defaults.device, help="cpu, cuda or cuda:N (default: %(default)s)"
    )
    parser.add_argument("--suites", nargs="+", default=defaults.suites, help=f"of {' '.join(SUITES)}")
    parser.add_argument(
        "--variants", nargs="+", default=defaults.variants, help="attention implementations (default: all)"
    )
    parser.add_argument("--dtypes", nargs="+", default=defaults.dtypes, help="of fp32 bf16")
    parser.add_argument("--passes", nargs="+", default=defaults.passes, help=f"of {' '.join(PASSES)}")
    parser.add_argument(
        "--seq_lengths", nargs="+", type=int, default=defaults.seq_lengths, help="ascending sequence lengths"
    )
    parser.add_argument(
        "--tokens_per_batch",
        type=int,
        default=defaults.tokens_per_batch,
        help="tokens per call: batch = tokens_per_batch // seq, at least 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--model_sizes", nargs="+", default=defaults.model_sizes, help=f"of {' '.join(MODEL_SIZES)}"
    )
    parser.add_argument(
        "--queries",
        nargs="+",
        type=int,
        default=defaults.queries,
        help="queries per document (encode_lookup)",
    )
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--min_repeats", type=int, default=defaults.min_repeats)
    parser.add_argument("--max_repeats", type=int, default=defaults.max_repeats)
    parser.add_argument("--repeats", type=int, help="shorthand: min and max repeats both set to this")
    parser.add_argument(
        "--time_budget", type=float, default=defaults.time_budget, help="seconds of timed calls per case"
    )
    parser.add_argument(
        "--memory_limit_gib",
        type=float,
        default=defaults.memory_limit_gib,
        help="CPU only: skip eager softmax cases whose probabilities exceed this",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    repeats = (args.min_repeats, args.max_repeats) if args.repeats is None else (args.repeats, args.repeats)
    config = BenchConfig(
        output_dir=args.output_dir,
        device=args.device,
        suites=tuple(args.suites),
        variants=tuple(args.variants),
        dtypes=tuple(args.dtypes),
        passes=tuple(args.passes),
        seq_lengths=tuple(args.seq_lengths),
        tokens_per_batch=args.tokens_per_batch,
        model_sizes=tuple(args.model_sizes),
        queries=tuple(args.queries),
        warmup=args.warmup,
        min_repeats=repeats[0],
        max_repeats=repeats[1],
        time_budget=args.time_budget,
        memory_limit_gib=args.memory_limit_gib,
        seed=args.seed,
    )
    rows = run_benchmark(config)
    print(markdown_tables(rows))
    print(f"wrote {config.output_dir / CSV_NAME} and the plots to {config.output_dir}")
    return 0
