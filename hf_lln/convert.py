"""``hf-lln convert``: a softmax BERT/RoBERTa checkpoint (folder or Hub id) -> an LLN checkpoint folder.

    hf-lln convert path/to/bert out/lln-bert --variant lln_diag --max-position 1024

Every softmax weight is kept (an LLN model has the same modules); only the attention computation changes, plus
the LLN+Diag mix weights of a learnable ``--mix-mode``, which start at the average. ``--max-position N`` lets the
model read N tokens by tiling the learned position embeddings (copies of the learned ones, as Longformer does).
The head follows the checkpoint's ``architectures`` (``BertForPreTraining`` gives the masked-LM head).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig, PreTrainedModel

from hf_lln.hub import write_model_card
from hf_lln.models.configuration_lln import LLN_SETTINGS_DEFAULTS, lln_config_from, position_offset
from hf_lln.models.modeling_lln import AUTO_MODEL_CLASSES
from hf_lln.ops.lln_diag import MIX_MODES
from hf_lln.ops.moments import STATS_MODES
from hf_lln.variants import ATTENTION_VARIANTS

# Checkpoint heads without an LLN class whose weights are a superset of one that has.
HEAD_ALIASES = {"ForPreTraining": "ForMaskedLM"}


@dataclass
class ConversionReport:
    """What ``convert_checkpoint`` did: the class written, the weights it added (LLN parameters, start at the
    average) and the checkpoint weights it left out (heads the class does not have)."""

    model_class: str
    new_lln_weights: list[str]
    unused_weights: list[str]
    max_position_embeddings: int


def lln_model_class(config: PreTrainedConfig) -> type[PreTrainedModel]:
    """The LLN class matching the head named in ``config.architectures`` (the bare model when none is named)."""
    classes = AUTO_MODEL_CLASSES[config.model_type]
    family = classes["AutoModel"].__name__.removeprefix("LLN").removesuffix("Model")
    architecture = (config.architectures or [f"{family}Model"])[0]
    head = architecture.removeprefix("LLN").removeprefix(family)
    head = HEAD_ALIASES.get(head, head)
    auto_name = "AutoModel" if head == "Model" else f"AutoModel{head}"
    if not head.startswith(("Model", "For")) or auto_name not in classes:
        heads = sorted(name.removeprefix("AutoModel") or "Model" for name in classes if name != "AutoConfig")
        raise ValueError(
            f"architecture {architecture!r} has no LLN class; supported heads: {', '.join(heads)}"
        )
    return classes[auto_name]


def extend_position_embeddings(model: PreTrainedModel, max_tokens: int) -> PreTrainedModel:
    """A copy of ``model`` that reads up to ``max_tokens`` tokens: the learned position rows are tiled to fill the
    longer table; everything else is unchanged."""
    config = model.config
    offset = position_offset(config)
    positions = max_tokens + offset
    if positions <= config.max_position_embeddings:
        raise ValueError(
            f"max_position must exceed the {config.max_position_embeddings - offset} tokens the model already reads, "
            f"got {max_tokens}"
        )
    table = model.base_model.embeddings.position_embeddings.weight.detach()
    learned = table[offset:]
    tiled = learned.repeat(math.ceil(max_tokens / learned.shape[0]), 1)[:max_tokens]
    prefix = f"{model.base_model_prefix}." if model.base_model is not model else ""
    state = model.state_dict()
    state[f"{prefix}embeddings.position_embeddings.weight"] = torch.cat([table[:offset], tiled])
    config.max_position_embeddings = positions
    extended = type(model)(config)
    extended.load_state_dict(state)
    return extended


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    variant: str = LLN_SETTINGS_DEFAULTS["lln_variant"],
    max_position: int | None = None,
    **lln_settings,
) -> ConversionReport:
    """Write the LLN checkpoint of ``src`` (folder or Hub id) to the new folder ``dst`` (weights, config, remote
    code, tokenizer when ``src`` has one, model card). Raises before writing anything if ``dst`` exists or a
    weight the LLN model needs is missing from ``src``."""
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"dst {dst} already exists; choose a new folder")
    if max_position is not None and (
        isinstance(max_position, bool) or not isinstance(max_position, int) or max_position < 1
    ):
        raise ValueError(f"max_position must be an integer >= 1, got {max_position!r}")
    config = lln_config_from(AutoConfig.from_pretrained(src), lln_variant=variant, **lln_settings)
    model_class = lln_model_class(config)
    model, loading = model_class.from_pretrained(src, config=config, output_loading_info=True)
    missing = [key for key in loading["missing_keys"] if ".lln_mix." not in key]
    if missing or loading["mismatched_keys"]:
        raise ValueError(
            f"{src} does not hold every weight of {model_class.__name__}: missing {sorted(missing)}, "
            f"mismatched {sorted(loading['mismatched_keys'])}"
        )
    tokenizer = _tokenizer_or_none(src)
    if max_position is not None:
        model = extend_position_embeddings(model, max_position)
        if tokenizer is not None:
            tokenizer.model_max_length = max_position
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        base_model = None if Path(src).exists() else str(src)
        write_model_card(staging, model.config, model_name=dst.name, base_model=base_model)
        os.replace(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionReport(
        model_class=model_class.__name__,
        new_lln_weights=sorted(loading["missing_keys"]),
        unused_weights=sorted(loading["unexpected_keys"]),
        max_position_embeddings=model.config.max_position_embeddings,
    )


def _tokenizer_or_none(src):
    try:
        return AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError):
        return None


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="softmax BERT/RoBERTa checkpoint -> LLN checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="softmax checkpoint: a folder or a Hub model id")
    parser.add_argument("dst", help="new folder for the LLN checkpoint")
    parser.add_argument("--variant", choices=ATTENTION_VARIANTS, default=LLN_SETTINGS_DEFAULTS["lln_variant"])
    parser.add_argument(
        "--max-position", type=int, help="longest input in tokens (extends the position table)"
    )
    parser.add_argument("--block-size", type=int, help="LLN+Diag softmax block size (default: head size)")
    parser.add_argument("--mix-mode", choices=MIX_MODES, default=LLN_SETTINGS_DEFAULTS["lln_mix_mode"])
    parser.add_argument("--stats", choices=STATS_MODES, default=LLN_SETTINGS_DEFAULTS["lln_stats"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = convert_checkpoint(
        args.src,
        args.dst,
        variant=args.variant,
        max_position=args.max_position,
        lln_block_size=args.block_size,
        lln_mix_mode=args.mix_mode,
        lln_stats=args.stats,
    )
    print(f"wrote {report.model_class} ({args.variant}) to {args.dst}")
    print(f"max_position_embeddings: {report.max_position_embeddings}")
    if report.new_lln_weights:
        print(f"new LLN weights ({len(report.new_lln_weights)}), initialised to the average mix")
    if report.unused_weights:
        print(f"checkpoint weights not used by {report.model_class}: {', '.join(report.unused_weights)}")
    return 0
