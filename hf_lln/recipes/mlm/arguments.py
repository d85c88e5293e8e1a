"""The MLM script's own arguments (model, tokenizer, data, masking) and their early validation."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_lln.recipes.mlm.model import PRESETS
from hf_lln.recipes.training import check_model_source

DATA_EXTENSIONS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv"}
DEFAULT_PRESET = "lln-roberta-tiny"


def add_mlm_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags named as in Transformers' ``run_mlm_no_trainer.py`` where the two overlap."""
    model = parser.add_argument_group("model and tokenizer")
    model.add_argument(
        "--model_name_or_path",
        type=str,
        default=None,
        help="Continue pretraining this checkpoint (folder or Hub id).",
    )
    model.add_argument(
        "--config_name",
        type=str,
        default=None,
        help=f"A preset ({', '.join(PRESETS)}), a config.json / folder, or a Hub id "
        f"(default: {DEFAULT_PRESET} unless --model_name_or_path).",
    )
    model.add_argument(
        "--tokenizer_name",
        type=str,
        default=None,
        help="Tokenizer folder or Hub id (default: the model's, or one trained on the training data).",
    )
    model.add_argument(
        "--tokenizer_vocab_size",
        type=int,
        default=None,
        help="Vocabulary of a tokenizer trained on the data (default: the config's vocab_size).",
    )

    data = parser.add_argument_group("data (none given: the bundled public-domain corpus)")
    data.add_argument("--dataset_name", type=str, default=None, help="Hub dataset, e.g. wikitext.")
    data.add_argument("--dataset_config_name", type=str, default=None, help="e.g. wikitext-103-raw-v1.")
    data.add_argument("--train_file", type=str, default=None, help="Local .txt, .json/.jsonl or .csv file.")
    data.add_argument("--validation_file", type=str, default=None, help="Same formats as --train_file.")
    data.add_argument(
        "--validation_split_percentage",
        type=int,
        default=5,
        help="Share of the training data held out for validation when there is no validation split.",
    )
    data.add_argument(
        "--max_seq_length",
        type=int,
        default=None,
        help="Tokens per sequence (default: the model's positions, at most 1024); position embeddings of a new "
        "model are sized to match.",
    )
    data.add_argument(
        "--line_by_line", action="store_true", help="One sequence per line instead of concatenated blocks."
    )
    data.add_argument("--preprocessing_num_workers", type=int, default=None)
    data.add_argument("--overwrite_cache", action="store_true", help="Ignore cached tokenised datasets.")
    data.add_argument(
        "--mlm_probability", type=float, default=0.15, help="Share of tokens masked for the loss."
    )


def check_mlm_arguments(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the flag for every bad MLM argument, before any work is done.

    Sets ``args.config_name`` to the default preset when neither a config nor a model is given.
    """
    if args.model_name_or_path is None and args.config_name is None:
        args.config_name = DEFAULT_PRESET
    if (
        args.config_name is not None
        and args.config_name.startswith("lln-")
        and args.config_name not in PRESETS
    ):
        if not Path(args.config_name).exists():
            raise ValueError(
                f"--config_name {args.config_name}: unknown preset; the presets are {', '.join(PRESETS)}"
            )
    check_model_source("model_name_or_path", args.model_name_or_path)
    check_model_source("tokenizer_name", args.tokenizer_name)
    if args.config_name not in PRESETS:
        check_model_source("config_name", args.config_name)
    if args.dataset_name is not None and (args.train_file is not None or args.validation_file is not None):
        raise ValueError("give either --dataset_name or --train_file/--validation_file, not both")
    if args.dataset_name is None and args.train_file is None and args.validation_file is not None:
        raise ValueError("--validation_file needs --train_file (or drop it to use the bundled corpus)")
    for flag in ("train_file", "validation_file"):
        path = getattr(args, flag)
        if path is None:
            continue
        if not Path(path).is_file():
            raise ValueError(f"--{flag} {path}: no such file")
        if Path(path).suffix not in DATA_EXTENSIONS:
            raise ValueError(f"--{flag} {path}: expected one of {', '.join(DATA_EXTENSIONS)} files")
    if not 0 < args.validation_split_percentage < 100:
        raise ValueError(
            f"--validation_split_percentage must be in 1..99, got {args.validation_split_percentage}"
        )
    if args.max_seq_length is not None and args.max_seq_length < 8:
        raise ValueError(f"--max_seq_length must be at least 8, got {args.max_seq_length}")
    if not 0 < args.mlm_probability < 1:
        raise ValueError(f"--mlm_probability must be in (0, 1), got {args.mlm_probability}")
    if args.tokenizer_vocab_size is not None and args.tokenizer_vocab_size < 64:
        raise ValueError(f"--tokenizer_vocab_size must be at least 64, got {args.tokenizer_vocab_size}")
