"""Presets, configs and the masked-LM model: sizes, position embeddings and the tokenizer kept consistent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel

from hf_lln.models.auto import register_auto_classes
from hf_lln.models.configuration_lln import config_for_attention, position_offset
from hf_lln.recipes.training import model_init_kwargs

# A preset's model_type (lln_roberta) must resolve through AutoConfig.
register_auto_classes()

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = ("lln-roberta-tiny", "lln-roberta-small", "lln-roberta-base")
MAX_DEFAULT_SEQ_LENGTH = 1024
VOCABULARY_MULTIPLE = 64
# exp(-1e4) is exactly 0 in float32 and float64 (both underflow below -746), so a padding row has zero
# probability and zero gradient; -1e4 plus any real logit stays finite in fp16 (max 65504) and bf16
PADDING_ROW_BIAS = -1e4


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

    A new model takes its vocabulary from ``tokenizer``, padded by :func:`pad_vocabulary`, its special
    token ids from ``tokenizer``, and gets exactly ``max_seq_length`` usable positions. A loaded model keeps
    its vocabulary, unless the tokenizer is larger: then it grows to the tokenizer, padded the same way.
    """
    if args.model_name_or_path is not None:
        model = AutoModelForMaskedLM.from_pretrained(
            args.model_name_or_path, config=config, **model_init_kwargs(args)
        )
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            pad_vocabulary(model, len(tokenizer))
        return model
    config.vocab_size = len(tokenizer)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        token_id = getattr(tokenizer, name, None)
        if token_id is not None:
            setattr(config, name, token_id)
    config.max_position_embeddings = max_seq_length + position_offset(config)
    model = AutoModelForMaskedLM.from_config(config, **model_init_kwargs(args))
    # the added rows of a new model are drawn like all its others, not from the statistics of trained ones
    pad_vocabulary(model, len(tokenizer), mean_resizing=False)
    return model


@torch.no_grad()
def pad_vocabulary(model: PreTrainedModel, vocabulary_size: int, *, mean_resizing: bool = True) -> None:
    """Size the embedding and decoder to ``vocabulary_size`` rounded up to a multiple of 64; the added
    rows are never predicted.

    ``vocabulary_size`` is the tokenizer's length: ids at or above it never occur in the inputs or labels.
    Matrix products over a vocabulary that is a multiple of 64 run on the fast tensor-core kernels
    (RoBERTa's 50,265 falls back to a slow cuBLAS kernel; 50,304 does not). The padding is Transformers'
    own ``resize_token_embeddings(..., pad_to_multiple_of=64)`` (``mean_resizing`` as there), which also
    sets ``config.vocab_size`` to the padded size. Each padding row's decoder bias is then set to
    ``PADDING_ROW_BIAS`` (-1e4), so its probability is exactly 0 and the loss is that over the real
    vocabulary; its gradient is exactly 0 too, and the training scripts' AdamW never decays a bias
    (``decay_parameter_groups``), so training leaves it there. The pin lives in the saved weights, so any
    consumer of the saved folder (``pipeline("fill-mask")``, ``trust_remote_code``, a stock class without
    hf_lln) never ranks a padding row above a real token, with no code of ours; slicing the logits to the
    real vocabulary instead would need a forward of our own in every class, stock ones included, and an
    extra field in the config.
    """
    decoder = model.get_output_embeddings()
    if decoder is None or getattr(decoder, "bias", None) is None:
        raise ValueError(
            f"model: {type(model).__name__} has no decoder bias to keep the padding rows of its vocabulary "
            "out of predictions"
        )
    model.resize_token_embeddings(
        vocabulary_size, pad_to_multiple_of=VOCABULARY_MULTIPLE, mean_resizing=mean_resizing
    )
    model.get_output_embeddings().bias[vocabulary_size:] = PADDING_ROW_BIAS
