"""``hf-lln convert``: a softmax BERT/RoBERTa checkpoint (folder or Hub id) -> an LLN checkpoint folder.

    hf-lln convert path/to/bert out/lln-bert --variant lln_diag --max_position 1024

Every softmax weight is kept (an LLN model has the same modules); only the attention computation changes, plus
the LLN+Diag mix weights of a learnable ``--mix_mode``, which start at the average. ``--max_position N`` lets the
model read N tokens by tiling the learned position embeddings (copies of the learned ones, as Longformer does).
The head follows the checkpoint's ``architectures`` (``BertForPreTraining`` gives the masked-LM head).

The conversion writes ``config.json``, the weights, the remote code, the tokenizer (re-saved, so that its
``tokenizer_config.json`` names its stock class) and ``README.md`` (the LLN model card); every other file of the
checkpoint is carried over unchanged: a sentence-transformers model keeps ``modules.json``, ``1_Pooling/``,
``2_Dense/`` (with its weights), ``sentence_bert_config.json`` and the rest, so it loads in sentence-transformers
with the same modules. Left out are the softmax model's weights in other formats and its exports (``onnx/``,
``openvino/``, ...), which would run softmax attention.

``--max_position`` also raises the tokenizer's ``model_max_length``, except that the length sentence-transformers
truncates inputs to stays what it was (the model was trained to it): ``sentence_bert_config.json`` keeps its
``max_seq_length``, and where it has none (sentence-transformers >= 6 keeps the length in the tokenizer) the
tokenizer keeps its ``model_max_length``. Set ``model.max_seq_length`` to use the longer positions.

``--transfer [TEXT]`` then trains the new attention to reproduce the checkpoint's softmax attention on TEXT (a text
file, a folder of ``.txt`` files, a Hub dataset id; the bundled corpus without TEXT; ``hf_lln.transfer``), so that
the converted model starts close to the original; the card records how, with every layer's loss before and after:

    hf-lln convert path/to/bert out/lln-bert --variant lln --transfer wiki.txt --transfer_steps 600
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig, PreTrainedModel

from hf_lln._permissions import make_shareable
from hf_lln.hub import ConversionNote, write_model_card
from hf_lln.models.configuration_lln import LLN_SETTINGS_DEFAULTS, lln_config_from, position_offset
from hf_lln.models.modeling_lln import AUTO_MODEL_CLASSES
from hf_lln.ops.lln_diag import MIX_MODES
from hf_lln.ops.moments import STATS_MODES
from hf_lln.transfer.loop import TransferReport
from hf_lln.transfer.options import (
    TextTransfer,
    add_transfer_arguments,
    prepare_transfer,
    transfer_converted,
    transfer_options,
)
from hf_lln.variants import ATTENTION_VARIANTS

# Checkpoint heads without an LLN class whose weights are a superset of one that has.
HEAD_ALIASES = {"ForPreTraining": "ForMaskedLM"}
# Checkpoint files (paths relative to it) that are not carried over: the softmax model's config and weights in every
# format (the conversion writes new ones), exports of it that would run softmax attention, and git/Hub metadata.
NOT_CARRIED = (
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model-*-of-*.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "tf_model-*-of-*.h5",
    "tf_model.h5.index.json",
    "flax_model.msgpack",
    "flax_model-*-of-*.msgpack",
    "flax_model.msgpack.index.json",
    "rust_model.ot",
    "model.ckpt*",
    "onnx/*",
    "openvino/*",
    "coreml/*",
    ".git/*",
    ".cache/*",
)
SENTENCE_TRANSFORMERS_CONFIG = "sentence_bert_config.json"


@dataclass
class ConversionReport:
    """What ``convert_checkpoint`` did: the class written, the weights it added (LLN parameters, start at the
    average), the checkpoint weights it left out (heads the class does not have), the checkpoint's other files
    (paths relative to it): carried over unchanged, or left out (``NOT_CARRIED``: weights, config, exports), for a
    sentence-transformers checkpoint the length sentence-transformers truncates inputs to (unchanged), and the
    attention transfer's report (None without ``--transfer``)."""

    model_class: str
    new_lln_weights: list[str]
    unused_weights: list[str]
    max_position_embeddings: int
    carried_files: list[str]
    left_out_files: list[str]
    sentence_transformers_max_seq_length: int | None
    transfer: TransferReport | None = None


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
    transfer: TextTransfer | None = None,
    **lln_settings,
) -> ConversionReport:
    """Write the LLN checkpoint of ``src`` (folder or Hub id) to the new folder ``dst`` (weights, config, remote
    code, tokenizer when ``src`` has one, model card) with every other file of ``src`` carried over unchanged
    (see the module docstring). Raises before writing anything if ``dst`` exists or a weight the LLN model needs
    is missing from ``src``.

    ``transfer``: first train the converted attention against ``src``'s softmax attention (``hf_lln.transfer``);
    its text is read, and the tokenizer looked for, before any model is loaded. The card records how."""
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"dst {dst} already exists; choose a new folder")
    if max_position is not None and (
        isinstance(max_position, bool) or not isinstance(max_position, int) or max_position < 1
    ):
        raise ValueError(f"max_position must be an integer >= 1, got {max_position!r}")
    source_config = AutoConfig.from_pretrained(src)
    config = lln_config_from(source_config, lln_variant=variant, **lln_settings)
    model_class = lln_model_class(config)
    tokenizer = _tokenizer_or_none(src)
    texts = prepare_transfer(transfer, src, source_config, tokenizer)
    model, loading = model_class.from_pretrained(src, config=config, output_loading_info=True)
    missing = [key for key in loading["missing_keys"] if ".lln_mix." not in key]
    if missing or loading["mismatched_keys"]:
        raise ValueError(
            f"{src} does not hold every weight of {model_class.__name__}: missing {sorted(missing)}, "
            f"mismatched {sorted(loading['mismatched_keys'])}"
        )
    transfer_report = None
    if transfer is not None:
        transfer_report = transfer_converted(src, model, tokenizer, transfer, texts)
    is_local = Path(src).exists()
    source = Path(src) if is_local else Path(snapshot_download(str(src), ignore_patterns=list(NOT_CARRIED)))
    length_setting = sentence_transformers_length_setting(source)
    original_positions = None
    if max_position is not None:
        original_positions = config.max_position_embeddings - position_offset(config)
        model = extend_position_embeddings(model, max_position)
        if tokenizer is not None and length_setting != "tokenizer":
            tokenizer.model_max_length = max_position
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_folder(dst)
    try:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        base_model = None if is_local else str(src)
        write_model_card(
            staging,
            model.config,
            model_name=dst.name,
            base_model=base_model,
            conversion=ConversionNote(base_model or Path(src).resolve().name, original_positions),
            training_summary=transfer_report.summary() if transfer_report is not None else None,
        )
        carried, left_out = carry_files(source, staging)
        make_shareable(staging)  # safetensors writes its files 0600 whatever the umask
        os.replace(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if length_setting == SENTENCE_TRANSFORMERS_CONFIG:
        max_seq_length = json.loads((source / SENTENCE_TRANSFORMERS_CONFIG).read_text())["max_seq_length"]
    else:
        in_tokenizer = length_setting == "tokenizer" and tokenizer is not None
        max_seq_length = tokenizer.model_max_length if in_tokenizer else None
    return ConversionReport(
        model_class=model_class.__name__,
        new_lln_weights=sorted(loading["missing_keys"]),
        unused_weights=sorted(loading["unexpected_keys"]),
        max_position_embeddings=model.config.max_position_embeddings,
        carried_files=carried,
        left_out_files=left_out,
        sentence_transformers_max_seq_length=max_seq_length,
        transfer=transfer_report,
    )


def sentence_transformers_length_setting(folder: Path) -> str | None:
    """Where sentence-transformers reads the length it truncates the inputs of the checkpoint in ``folder`` to:
    ``"sentence_bert_config.json"`` (its ``max_seq_length``), ``"tokenizer"`` (the tokenizer's
    ``model_max_length``, where sentence-transformers >= 6 keeps it), or None (no ``modules.json``: not a
    sentence-transformers checkpoint)."""
    if not (folder / "modules.json").is_file():
        return None
    settings = folder / SENTENCE_TRANSFORMERS_CONFIG
    if settings.is_file() and json.loads(settings.read_text()).get("max_seq_length") is not None:
        return SENTENCE_TRANSFORMERS_CONFIG
    return "tokenizer"


def carry_files(source: Path, target: Path) -> tuple[list[str], list[str]]:
    """Copy every file of the checkpoint folder ``source`` into ``target`` unchanged, except those matching
    ``NOT_CARRIED`` and those ``target`` already has (written by the conversion); returns ``(carried, left_out)``,
    sorted paths relative to ``source`` (``left_out``: the ``NOT_CARRIED`` ones)."""
    carried, left_out = [], []
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(source).as_posix()
        if any(fnmatch.fnmatch(name, pattern) for pattern in NOT_CARRIED):
            left_out.append(name)
        elif not (target / name).exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)
            carried.append(name)
    return carried, left_out


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
    parser.add_argument("--variant", choices=ATTENTION_VARIANTS, default=LLN_SETTINGS_DEFAULTS["lln_variant"])
    parser.add_argument(
        "--max_position", type=int, help="longest input in tokens (extends the position table)"
    )
    parser.add_argument(
        "--block_size", type=int, help="LLN+Diag softmax block size (default: the head size, at least 64)"
    )
    parser.add_argument("--mix_mode", choices=MIX_MODES, default=LLN_SETTINGS_DEFAULTS["lln_mix_mode"])
    parser.add_argument("--stats", choices=STATS_MODES, default=LLN_SETTINGS_DEFAULTS["lln_stats"])
    add_transfer_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not Path(args.src).exists():
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(args.src)
        except HFValidationError:
            raise ValueError(f"src {args.src}: no such folder (and not a Hub model id)") from None
    transfer = transfer_options(args)
    # without --block_size, the conversion's own (converted_block_size), not None (the head size)
    block = {} if args.block_size is None else {"lln_block_size": args.block_size}
    report = convert_checkpoint(
        args.src,
        args.dst,
        variant=args.variant,
        max_position=args.max_position,
        lln_mix_mode=args.mix_mode,
        lln_stats=args.stats,
        transfer=transfer,
        **block,
    )
    print(f"wrote {report.model_class} ({args.variant}) to {args.dst}")
    print(f"max_position_embeddings: {report.max_position_embeddings}")
    if report.new_lln_weights:
        print(f"new LLN weights ({len(report.new_lln_weights)}), initialised to the average mix")
    if report.unused_weights:
        print(f"checkpoint weights not used by {report.model_class}: {', '.join(report.unused_weights)}")
    if report.carried_files:
        print(f"carried over unchanged: {', '.join(report.carried_files)}")
    dropped = [name for name in report.left_out_files if not (Path(args.dst) / name).exists()]
    if dropped:
        print(
            f"left out (the softmax model's weights in other formats and its exports): {', '.join(dropped)}"
        )
    if report.sentence_transformers_max_seq_length is not None and args.max_position is not None:
        print(
            f"sentence-transformers still truncates inputs at max_seq_length={report.sentence_transformers_max_seq_length}"
            f" tokens; set model.max_seq_length (up to {args.max_position}) to use the longer positions"
        )
    return 0
