"""Namespace of the MLM flags with their defaults, for tests that call the pieces directly."""

from __future__ import annotations

import argparse


def mlm_args(**overrides) -> argparse.Namespace:
    fields = dict(
        model_name_or_path=None,
        config_name=None,
        tokenizer_name=None,
        tokenizer_vocab_size=None,
        dataset_name=None,
        dataset_config_name=None,
        train_file=None,
        validation_file=None,
        validation_split_percentage=5,
        max_seq_length=None,
        line_by_line=False,
        preprocessing_num_workers=None,
        overwrite_cache=False,
        mlm_probability=0.15,
        attn_implementation=None,
    )
    fields.update(overrides)
    return argparse.Namespace(**fields)
