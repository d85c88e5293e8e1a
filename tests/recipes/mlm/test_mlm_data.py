"""Data: the bundled corpus, local files, blocks and lines, the trained tokenizer."""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path

import pytest
from accelerate import Accelerator
from transformers import BertConfig

from hf_lln.recipes.mlm import (
    DEFAULT_CORPUS,
    check_mlm_arguments,
    load_default_corpus,
    load_raw_datasets,
    preset_config,
    tokenize_for_mlm,
    tokenizer_for_run,
)
from tests.recipes.mlm._mlm_args import mlm_args

LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Alice was beginning to get very tired of sitting by her sister on the bank.",
    "Piping down the valleys wild, piping songs of pleasant glee.",
    "When shall we three meet again, in thunder, lightning, or in rain?",
] * 8


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, accelerator):
    args = mlm_args(
        output_dir=str(tmp_path_factory.mktemp("tok")), resume_from_checkpoint=None, tokenizer_vocab_size=300
    )
    corpus = load_default_corpus()
    return tokenizer_for_run(args, preset_config("lln-roberta-tiny"), corpus, "text", 64, accelerator)


def test_bundled_corpus_is_small_public_domain_text():
    assert DEFAULT_CORPUS.stat().st_size < 1_000_000
    corpus = load_default_corpus()
    text = "\n".join(corpus["text"])
    assert len(corpus) > 1000 and all(line.strip() for line in corpus["text"])
    for phrase in ("Down the Rabbit-Hole", "Piping down the valleys wild", "When shall we three meet againe"):
        assert phrase in text


def test_no_data_arguments_use_the_bundled_corpus_with_a_held_out_split():
    raw = load_raw_datasets(mlm_args(validation_split_percentage=10))
    total = len(load_default_corpus())
    assert len(raw["validation"]) == total * 10 // 100
    assert len(raw["train"]) + len(raw["validation"]) == total
    assert raw["validation"][0]["text"] == load_default_corpus()[0]["text"]


def test_trained_tokenizers_are_byte_level_bpe_and_wordpiece(tmp_path, accelerator, tokenizer):
    assert type(tokenizer.backend_tokenizer.model).__name__ == "BPE"
    assert tokenizer.convert_ids_to_tokens(tokenizer(" the")["input_ids"])[1] == "Ġthe"
    assert len(tokenizer) == 300 and tokenizer.mask_token == "<mask>"
    assert (Path(tokenizer.name_or_path) / "tokenizer.json").is_file()
    args = mlm_args(output_dir=str(tmp_path), resume_from_checkpoint=None, tokenizer_vocab_size=300)
    wordpiece = tokenizer_for_run(args, BertConfig(), load_default_corpus(), "text", 64, accelerator)
    assert type(wordpiece.backend_tokenizer.model).__name__ == "WordPiece"
    assert wordpiece.mask_token == "[MASK]"


@pytest.mark.parametrize("suffix", [".txt", ".json", ".csv"])
def test_local_files_are_grouped_into_full_blocks(tmp_path, accelerator, tokenizer, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(LINES) + "\n")
    elif suffix == ".json":
        path.write_text("\n".join(json.dumps({"text": line}) for line in LINES) + "\n")
    else:
        path.write_text("text\n" + "\n".join(f'"{line}"' for line in LINES) + "\n")
    args = mlm_args(train_file=str(path), validation_split_percentage=20, max_seq_length=16)
    check_mlm_arguments(args)
    raw = load_raw_datasets(args)
    tokenized = tokenize_for_mlm(raw, tokenizer, 16, args, accelerator)
    # reference: every non-empty line tokenised on its own, then concatenated
    train_lines = [line for line in raw["train"]["text"] if line]
    stream = list(chain(*(tokenizer(line)["input_ids"] for line in train_lines)))
    blocks = tokenized["train"]["input_ids"]
    assert all(len(block) == 16 for block in blocks)
    assert list(chain(*blocks)) == stream[: len(blocks) * 16]
    assert len(stream) - len(blocks) * 16 < 16


def test_line_by_line_keeps_one_truncated_sequence_per_non_empty_line(tmp_path, accelerator, tokenizer):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(LINES) + "\n")
    args = mlm_args(train_file=str(path), line_by_line=True, max_seq_length=12)
    raw = load_raw_datasets(args)
    tokenized = tokenize_for_mlm(raw, tokenizer, 12, args, accelerator)
    non_empty = [line for line in raw["train"]["text"] if line.strip()]
    assert len(tokenized["train"]) == len(non_empty)
    for line, ids in zip(non_empty, tokenized["train"]["input_ids"], strict=True):
        full = tokenizer(line)["input_ids"]
        assert len(ids) == min(len(full), 12) and ids[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_file": "/nonexistent/train.txt"}, "--train_file /nonexistent/train.txt: no such file"),
        ({"validation_file": "valid.txt"}, "--validation_file needs --train_file"),
        ({"dataset_name": "wikitext", "train_file": "x.txt"}, "either --dataset_name or --train_file"),
        ({"mlm_probability": 1.5}, "--mlm_probability"),
        ({"max_seq_length": 2}, "--max_seq_length"),
    ],
)
def test_bad_data_arguments_fail_early(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_mlm_arguments(mlm_args(**overrides))


def test_unsupported_file_format_is_named(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="expected one of .txt"):
        check_mlm_arguments(mlm_args(train_file=str(path)))


def test_too_little_text_for_one_block_fails_clearly(tmp_path, accelerator, tokenizer):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(LINES[:5]) + "\n")
    args = mlm_args(train_file=str(path), max_seq_length=64)
    with pytest.raises(ValueError, match="no sequence of --max_seq_length 64"):
        tokenize_for_mlm(load_raw_datasets(args), tokenizer, 64, args, accelerator)
