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
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig, PreTrainedModel

from hf_lln._permissions import make_shareable
from hf_lln.hub import ConversionNote, write_model_card
from hf_lln.integration.attention import ATTENTION_VARIANTS, LLN_CONFIG_DEFAULTS
from hf_lln.models.configuration_lln import LLNBertConfig, LLNRobertaConfig
from hf_lln.models.modeling_lln import AUTO_MODEL_CLASSES
from hf_lln.ops.lln_diag import MIX_MODES
from hf_lln.ops.moments import STATS_MODES

LLN_CONFIG_CLASSES = {
    "bert": LLNBertConfig,
    "roberta": LLNRobertaConfig,
    "lln_bert": LLNBertConfig,
    "lln_roberta": LLNRobertaConfig,
}
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


def lln_config_from(config: PreTrainedConfig, **lln_settings) -> PreTrainedConfig:
    """The LLN config equal to a stock (or LLN) BERT/RoBERTa ``config`` with ``lln_*`` fields set from
    ``lln_settings`` (the others keep their values or defaults)."""
    if config.model_type not in LLN_CONFIG_CLASSES:
        raise ValueError(
            f"config must be a BERT or RoBERTa config (model_type one of {sorted(LLN_CONFIG_CLASSES)}), got {config.model_type!r}"
        )
    unknown = set(lln_settings) - set(LLN_CONFIG_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown LLN settings {sorted(unknown)}; expected some of {sorted(LLN_CONFIG_DEFAULTS)}"
        )
    values = {key: value for key, value in config.to_dict().items() if key not in ("model_type", "auto_map")}
    return LLN_CONFIG_CLASSES[config.model_type](**{**values, **lln_settings})


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


def position_offset(config: PreTrainedConfig) -> int:
    """Position-table rows before the first token: RoBERTa counts positions from ``pad_token_id + 1``."""
    return config.pad_token_id + 1 if "roberta" in config.model_type else 0


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
    variant: str = LLN_CONFIG_DEFAULTS["lln_variant"],
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
    original_positions = None
    if max_position is not None:
        original_positions = config.max_position_embeddings - position_offset(config)
        model = extend_position_embeddings(model, max_position)
        if tokenizer is not None:
            tokenizer.model_max_length = max_position
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_folder(dst)
    try:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        base_model = None if Path(src).exists() else str(src)
        write_model_card(
            staging,
            model.config,
            model_name=dst.name,
            base_model=base_model,
            conversion=ConversionNote(base_model or Path(src).resolve().name, original_positions),
        )
        make_shareable(staging)  # safetensors writes its files 0600 whatever the umask
        os.replace(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionReport(
        model_class=model_class.__name__,
        new_lln_weights=sorted(loading["missing_keys"]),
        unused_weights=sorted(loading["unexpected_keys"]),
        max_position_embeddings=model.config.max_position_embeddings,
    )


def _staging_folder(dst: Path) -> Path:
    """A new hidden folder beside ``dst`` with the umask's mode (``tempfile.mkdtemp`` makes it 0700, and the
    rename would carry that private mode to ``dst``)."""
    while True:
        staging = dst.parent / f".{dst.name}.{secrets.token_hex(4)}.tmp"
        try:
            staging.mkdir()
            return staging
        except FileExistsError:
            continue


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
    parser.add_argument("--variant", choices=ATTENTION_VARIANTS, default=LLN_CONFIG_DEFAULTS["lln_variant"])
    parser.add_argument(
        "--max-position", type=int, help="longest input in tokens (extends the position table)"
    )
    parser.add_argument("--block-size", type=int, help="LLN+Diag softmax block size (default: head size)")
    parser.add_argument("--mix-mode", choices=MIX_MODES, default=LLN_CONFIG_DEFAULTS["lln_mix_mode"])
    parser.add_argument("--stats", choices=STATS_MODES, default=LLN_CONFIG_DEFAULTS["lln_stats"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not Path(args.src).exists():
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(args.src)
        except HFValidationError:
            raise ValueError(f"src {args.src}: no such folder (and not a Hub model id)") from None
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
