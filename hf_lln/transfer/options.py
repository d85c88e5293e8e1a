"""Attention transfer inside ``hf-lln convert``: the ``--transfer*`` flags and the step that trains the converted
model against the softmax checkpoint it came from.

    hf-lln convert path/to/bert out/lln-bert --variant lln --transfer wiki.txt --transfer_steps 600

Every default is ``TransferSettings``'s; the flags only override the fields they name.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from transformers import AutoModel

from hf_lln.models.configuration_lln import is_lln_config
from hf_lln.transfer.loop import (
    END_TO_END_LOSSES,
    END_TO_END_TRAIN,
    TransferReport,
    TransferSettings,
    transfer_attention,
)
from hf_lln.transfer.matching import LOSSES
from hf_lln.transfer.params import TRAIN_MODES
from hf_lln.transfer.texts import TextSource, load_texts, text_batches

DEFAULTS = TransferSettings()
# accelerate's choices that train in float32 master weights with float32 losses (fp8 is not one of them)
MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")
# flag (without "--") -> (TransferSettings field, type or choices, help)
SETTING_FLAGS = {
    "transfer_steps": ("steps", int, "layer-by-layer steps"),
    "transfer_end_to_end_steps": (
        "end_to_end_steps",
        int,
        "then steps matching the hidden states end to end",
    ),
    "transfer_lr": ("learning_rate", float, "peak learning rate of the layer-by-layer steps"),
    "transfer_batch_size": ("batch_size", int, "texts per batch"),
    "transfer_max_length": ("max_length", int, "tokens per text"),
    "transfer_train": ("train", TRAIN_MODES, "attention parameters the layer-by-layer steps train"),
    "transfer_lora_rank": ("lora_rank", int, "rank of --transfer_train lora"),
    "transfer_loss": ("loss", LOSSES, "layer loss"),
    "transfer_end_to_end_loss": ("end_to_end_loss", END_TO_END_LOSSES, "what the end-to-end steps match"),
    "transfer_end_to_end_train": (
        "end_to_end_train",
        END_TO_END_TRAIN,
        "parameters the end-to-end steps train",
    ),
    "transfer_end_to_end_lr": (
        "end_to_end_learning_rate",
        float,
        "peak learning rate of the end-to-end steps",
    ),
    "transfer_mixed_lengths": (
        "mixed_lengths",
        bool,
        "every other batch: twice the texts at half the length",
    ),
    "transfer_query_fraction": (
        "query_fraction",
        float,
        "share of the query rows the weight loss compares at each layer-by-layer step",
    ),
    "transfer_seed": ("seed", int, "text order, LoRA init and query draws"),
}


@dataclass(frozen=True)
class TextTransfer:
    """Attention transfer of a conversion: ``text`` (a file, a folder of .txt files, a Hub dataset id, or None for
    the bundled corpus; see ``load_texts``), ``settings`` for the training (and how the text is cut into
    batches), ``mixed_precision`` for accelerate (None: its configured default)."""

    text: str | None = None
    settings: TransferSettings = field(default_factory=TransferSettings)
    mixed_precision: str | None = None

    def __post_init__(self):
        if self.mixed_precision not in (None, *MIXED_PRECISION_CHOICES):
            raise ValueError(
                f"mixed_precision must be one of {', '.join(MIXED_PRECISION_CHOICES)} or None, got "
                f"{self.mixed_precision!r}"
            )


def prepare_transfer(transfer: TextTransfer | None, src, config, tokenizer) -> TextSource | None:
    """The texts of ``transfer`` (None without one), read before any model is loaded so that a bad source, a
    checkpoint that is not a softmax one (``config``, its config) or one without a tokenizer fails first."""
    if transfer is None:
        return None
    if is_lln_config(config):
        raise ValueError(
            f"--transfer teaches the new attention the checkpoint's softmax attention, and {src} is already an LLN "
            f"checkpoint (model_type {config.model_type!r}); convert the softmax checkpoint it came from"
        )
    if tokenizer is None:
        raise ValueError(f"--transfer needs a tokenizer to read its text, and {src} has none")
    return load_texts(transfer.text)


def transfer_converted(
    src, student: torch.nn.Module, tokenizer, transfer: TextTransfer, texts: TextSource
) -> TransferReport:
    """Train ``student`` (``src`` converted) to reproduce ``src`` run with softmax attention, on ``texts``. A
    checkpoint stored in half precision trains in float32 (``transfer.mixed_precision`` is the way to compute in
    half) and goes back to its dtype afterwards, so the saved model keeps the checkpoint's dtype."""
    teacher = AutoModel.from_pretrained(src, attn_implementation="sdpa", dtype=torch.float32)
    stored_dtype = student.dtype
    student.float()
    try:
        return _transfer(teacher, student, tokenizer, transfer, texts)
    finally:
        student.to(stored_dtype)


def _transfer(teacher, student, tokenizer, transfer: TextTransfer, texts: TextSource) -> TransferReport:
    settings = transfer.settings
    batches = text_batches(
        texts.texts,
        tokenizer,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
        seed=settings.seed,
        mixed_lengths=settings.mixed_lengths,
    )
    return transfer_attention(
        teacher,
        student,
        batches,
        settings,
        accelerator=Accelerator(mixed_precision=transfer.mixed_precision),
        source=(
            f"{texts.description} in batches of {settings.batch_size} texts of at most {settings.max_length} tokens"
            + (
                f", alternating with batches of {2 * settings.batch_size} texts of at most "
                f"{settings.max_length // 2} tokens"
                if settings.mixed_lengths
                else ""
            )
        ),
    )


def add_transfer_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "attention transfer",
        "Train the converted attention to reproduce the softmax checkpoint's (--transfer).",
    )
    group.add_argument(
        "--transfer",
        nargs="?",
        const="",
        metavar="TEXT",
        help="transfer on TEXT: a text file, a folder of .txt files or a Hub dataset id NAME[:CONFIG]; "
        "without TEXT, the bundled corpus",
    )
    add_flags(
        group,
        {flag: (kind, text) for flag, (_, kind, text) in SETTING_FLAGS.items()},
        {flag: getattr(DEFAULTS, name) for flag, (name, _, _) in SETTING_FLAGS.items()},
    )
    group.add_argument(
        "--mixed_precision", choices=MIXED_PRECISION_CHOICES, help="default: accelerate's config"
    )


def add_flags(group, flags: dict[str, tuple], defaults: dict[str, object]) -> None:
    """One flag ``--NAME`` per entry ``NAME: (kind, help)`` of ``flags``, ``kind`` a type, a tuple of choices, or
    ``bool`` for ``--NAME/--no-NAME``; left None when not given (so that a run can tell what was asked for); its
    help ends with ``defaults[NAME]``, the value used then."""
    for flag, (kind, text) in flags.items():
        if kind is bool:
            typed = {"action": argparse.BooleanOptionalAction}
        elif isinstance(kind, tuple):
            typed = {"choices": kind}
        else:
            typed = {"type": kind, "metavar": kind.__name__.upper()}
        default = defaults[flag]
        shown = f"{default:g}" if isinstance(default, float) else default
        group.add_argument(f"--{flag}", **typed, help=f"{text} (default {shown})")


def transfer_options(args: argparse.Namespace) -> TextTransfer | None:
    """The ``TextTransfer`` the flags ask for (None without ``--transfer``); ``ValueError`` naming the flag for
    a transfer flag given without ``--transfer`` or a bad value."""
    given = {flag: getattr(args, flag) for flag in SETTING_FLAGS if getattr(args, flag) is not None}
    if args.mixed_precision is not None:
        given["mixed_precision"] = args.mixed_precision
    if args.transfer is None:
        if given:
            raise ValueError(f"{', '.join('--' + flag for flag in given)} only apply with --transfer [TEXT]")
        return None
    values = {SETTING_FLAGS[flag][0]: value for flag, value in given.items() if flag in SETTING_FLAGS}
    try:
        settings = TransferSettings(**values)
    except ValueError as error:  # its message starts with the field; name the flag too
        flag = next((f for f, (name, _, _) in SETTING_FLAGS.items() if name == str(error).split()[0]), None)
        raise ValueError(f"--{flag}: {error}" if flag else str(error)) from None
    return TextTransfer(text=args.transfer or None, settings=settings, mixed_precision=args.mixed_precision)
