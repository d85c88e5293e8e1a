"""Presets, configs and the masked-LM model: sizes, position embeddings and the tokenizer kept consistent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoConfig, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel

from hf_lln.models.auto import register_auto_classes
from hf_lln.models.configuration_lln import config_for_attention, position_offset
from hf_lln.recipes.training import model_init_kwargs

# A preset's model_type (lln_roberta) must resolve through AutoConfig.
register_auto_classes()

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = ("lln-roberta-tiny", "lln-roberta-small", "lln-roberta-base")
MAX_DEFAULT_SEQ_LENGTH = 1024


def preset_config(name: str) -> PretrainedConfig:
    """The config of a preset shipped in ``hf_lln/recipes/mlm/presets`` (``lln-roberta-base`` = RoBERTa-base sizes)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    fields = json.loads((PRESET_DIR / f"{name}.json").read_text())
    return AutoConfig.for_model(**fields)


def load_config(args: argparse.Namespace) -> PretrainedConfig:
    """``--config_name`` (preset, file, folder or Hub id), else the config of ``--model_name_or_path``,
    made to record ``--attn_implementation`` (see :func:`config_for_attention`)."""
    if args.config_name in PRESETS:
        config = preset_config(args.config_name)
    else:
        config = AutoConfig.from_pretrained(args.config_name or args.model_name_or_path)
    return config_for_attention(config, args.attn_implementation)


def resolve_max_seq_length(args: argparse.Namespace, config: PretrainedConfig) -> int:
    """``--max_seq_length``, or the config's usable positions (at most 1024).

    A pretrained model (``--model_name_or_path``) cannot go beyond its position embeddings; a new
    model gets position embeddings sized to match (see :func:`build_model`).
    """
    available = config.max_position_embeddings - position_offset(config)
    if args.max_seq_length is None:
        return min(available, MAX_DEFAULT_SEQ_LENGTH)
    if args.model_name_or_path is not None and args.max_seq_length > available:
        raise ValueError(
            f"--max_seq_length {args.max_seq_length} is larger than the {available} positions of "
            f"--model_name_or_path {args.model_name_or_path}; use --max_seq_length {available} or less"
        )
    return args.max_seq_length


def build_model(
    args: argparse.Namespace, config: PretrainedConfig, tokenizer, max_seq_length: int
) -> PreTrainedModel:
    """The masked-LM model: loaded from ``--model_name_or_path``, or new from ``config``.

    A new model takes its vocabulary size and special token ids from ``tokenizer`` and gets exactly
    ``max_seq_length`` usable positions. A loaded model's embeddings grow if the tokenizer is larger.
    """
    if args.model_name_or_path is not None:
        model = AutoModelForMaskedLM.from_pretrained(
            args.model_name_or_path, config=config, **model_init_kwargs(args)
        )
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        return model
    config.vocab_size = len(tokenizer)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        token_id = getattr(tokenizer, name, None)
        if token_id is not None:
            setattr(config, name, token_id)
    config.max_position_embeddings = max_seq_length + position_offset(config)
    return AutoModelForMaskedLM.from_config(config, **model_init_kwargs(args))
