"""MLM data: raw text from the Hub, local files or the bundled corpus; tokenised blocks; dataloaders."""

from __future__ import annotations

import argparse
import gzip
from itertools import chain
from pathlib import Path

from accelerate import Accelerator
from datasets import Dataset, DatasetDict, load_dataset
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from hf_lln.recipes.mlm.arguments import DATA_EXTENSIONS
from hf_lln.transfer.texts import BUNDLED_CORPUS as DEFAULT_CORPUS  # named where `datasets` is not needed

MODEL_COLUMNS = ("input_ids", "attention_mask", "special_tokens_mask")


def load_default_corpus() -> Dataset:
    """The bundled public-domain corpus (see ``corpus/README.md``): one paragraph per row, column ``text``."""
    with gzip.open(DEFAULT_CORPUS, "rt", encoding="utf-8") as corpus:
        return Dataset.from_dict({"text": corpus.read().splitlines()})


def hold_out(dataset: Dataset, percentage: int) -> DatasetDict:
    """The first ``percentage``% of rows as validation, the rest as train (as ``run_mlm_no_trainer`` does)."""
    size = max(1, len(dataset) * percentage // 100)
    return DatasetDict(
        train=dataset.select(range(size, len(dataset))), validation=dataset.select(range(size))
    )


def load_raw_datasets(args: argparse.Namespace) -> DatasetDict:
    """``train`` and ``validation`` text splits from ``--dataset_name``, ``--train_file`` or the bundled corpus."""
    if args.dataset_name is not None:
        raw = load_dataset(args.dataset_name, args.dataset_config_name)
        if "train" not in raw:
            raise ValueError(f"--dataset_name {args.dataset_name}: no train split (found {', '.join(raw)})")
        if "validation" in raw:
            return DatasetDict(train=raw["train"], validation=raw["validation"])
        return hold_out(raw["train"], args.validation_split_percentage)
    if args.train_file is not None:
        files = {"train": args.train_file}
        if args.validation_file is not None:
            files["validation"] = args.validation_file
        builders = {DATA_EXTENSIONS[Path(path).suffix] for path in files.values()}
        if len(builders) > 1:
            raise ValueError("--train_file and --validation_file must have the same format")
        raw = load_dataset(builders.pop(), data_files=files)
        if "validation" in raw:
            return raw
        return hold_out(raw["train"], args.validation_split_percentage)
    return hold_out(load_default_corpus(), args.validation_split_percentage)


def text_column(dataset: Dataset) -> str:
    """``text`` when present, else the first column (as ``run_mlm_no_trainer`` does)."""
    return "text" if "text" in dataset.column_names else dataset.column_names[0]


def tokenize_for_mlm(
    raw: DatasetDict, tokenizer, max_seq_length: int, args: argparse.Namespace, accelerator: Accelerator
) -> DatasetDict:
    """Token ids, attention mask and special-tokens mask per sequence.

    Empty lines are dropped. With ``--line_by_line`` each line is one sequence (truncated to ``max_seq_length``);
    otherwise all text is concatenated and cut into blocks of exactly ``max_seq_length`` tokens (the
    remainder of each batch of 1000 rows is dropped). Raises ``ValueError`` when a split gets no sequence.
    """
    column = text_column(raw["train"])

    def tokenize(examples):
        lines = [line for line in examples[column] if line and not line.isspace()]
        encoded = tokenizer(
            lines,
            truncation=args.line_by_line,
            max_length=max_seq_length if args.line_by_line else None,
            return_special_tokens_mask=True,
            verbose=args.line_by_line,  # long lines are expected when they are cut into blocks afterwards
        )
        return {name: encoded[name] for name in MODEL_COLUMNS}

    def group(examples):
        concatenated = {name: list(chain(*examples[name])) for name in MODEL_COLUMNS}
        total = len(concatenated["input_ids"]) // max_seq_length * max_seq_length
        return {
            name: [values[start : start + max_seq_length] for start in range(0, total, max_seq_length)]
            for name, values in concatenated.items()
        }

    map_kwargs = {
        "num_proc": args.preprocessing_num_workers,
        "load_from_cache_file": not args.overwrite_cache,
    }
    with accelerator.main_process_first():
        tokenized = raw.map(
            tokenize,
            batched=True,
            remove_columns=raw["train"].column_names,
            desc="tokenizing",
            **map_kwargs,
        )
        if not args.line_by_line:
            tokenized = tokenized.map(
                group, batched=True, desc=f"grouping into blocks of {max_seq_length}", **map_kwargs
            )
    for split, dataset in tokenized.items():
        if len(dataset) == 0:
            raise ValueError(
                f"the {split} split has no sequence of --max_seq_length {max_seq_length} tokens: "
                "give more text, a smaller --max_seq_length, or --line_by_line"
            )
    return tokenized


def make_dataloaders(
    tokenized: DatasetDict, tokenizer, args: argparse.Namespace, pad_to_multiple_of: int | None
) -> tuple[DataLoader, DataLoader]:
    """Shuffled training and ordered validation dataloaders; batches padded to the longest sequence.

    Masking is not done here but in the training step (``MaskedLanguageModeling``), so that it
    replays exactly after a resume.
    """
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
    train = DataLoader(
        tokenized["train"], shuffle=True, collate_fn=collator, batch_size=args.per_device_train_batch_size
    )
    validation = DataLoader(
        tokenized["validation"], collate_fn=collator, batch_size=args.per_device_eval_batch_size
    )
    return train, validation
