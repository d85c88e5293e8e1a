"""The run's tokenizer: a named one, the model's own, or one trained on the training data."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from accelerate import Accelerator
from datasets import Dataset
from transformers import AutoTokenizer, BertTokenizer, PretrainedConfig, RobertaTokenizer

TRAINING_BATCH = 1000


def trainable_tokenizer(config: PretrainedConfig):
    """An empty tokenizer of the model's family: byte-level BPE for RoBERTa, WordPiece for BERT."""
    if "roberta" in config.model_type:
        return RobertaTokenizer()
    if "bert" in config.model_type:
        return BertTokenizer()
    raise ValueError(
        f"--tokenizer_name is required for model_type {config.model_type!r}: "
        "a tokenizer can be trained only for the BERT and RoBERTa families"
    )


def text_batches(dataset: Dataset, column: str) -> Iterator[list[str]]:
    for start in range(0, len(dataset), TRAINING_BATCH):
        yield dataset[start : start + TRAINING_BATCH][column]


def tokenizer_for_run(
    args: argparse.Namespace,
    config: PretrainedConfig,
    train_dataset: Dataset,
    text_column: str,
    max_seq_length: int,
    accelerator: Accelerator,
):
    """``--tokenizer_name``, else ``--model_name_or_path``'s, else one trained on ``train_dataset``.

    A trained tokenizer is written to ``--output_dir`` by the main process and read there by the
    others; a resumed run reads the one its first part trained.
    """
    source = args.tokenizer_name or args.model_name_or_path
    if source is not None:
        return AutoTokenizer.from_pretrained(source)
    output_dir = Path(args.output_dir)
    if args.resume_from_checkpoint is not None:
        if not (output_dir / "tokenizer_config.json").is_file():
            raise ValueError(
                f"--resume_from_checkpoint: the tokenizer trained by the first run is missing from {output_dir}"
            )
        return AutoTokenizer.from_pretrained(output_dir)
    blank = trainable_tokenizer(config)
    if accelerator.is_main_process:
        vocab_size = args.tokenizer_vocab_size or config.vocab_size
        tokenizer = blank.train_new_from_iterator(
            text_batches(train_dataset, text_column), vocab_size=vocab_size
        )
        tokenizer.model_max_length = max_seq_length
        tokenizer.save_pretrained(output_dir)
    accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(output_dir)
