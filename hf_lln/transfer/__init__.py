"""Attention transfer: make a linear-attention student reproduce its softmax teacher before it is used or
fine-tuned (``hf-lln convert --transfer``, ``python -m hf_lln.recipes.run_glue --teacher_model_name_or_path``).

>>> from hf_lln.transfer import TransferSettings, load_texts, text_batches, transfer_attention
>>> texts = load_texts("wiki.txt")                              # or a folder, a Hub dataset id, None (bundled)
>>> batches = text_batches(texts.texts, tokenizer, batch_size=16, max_length=128)
>>> report = transfer_attention(teacher, student, batches, TransferSettings(steps=300), source=texts.description)

Modules: ``texts`` (text sources, batches), ``matching`` (one layer of teacher and student, the losses),
``weight_kl`` (LLN's weight loss with its gradient written out), ``graphs`` (GPU layer steps replayed from CUDA
graphs), ``params`` (which attention parameters train), ``loop`` (``TransferSettings``, ``transfer_attention``),
``distill`` (distillation of logits and hidden states), ``options`` (``hf-lln convert --transfer``). Nothing here
imports ``datasets`` (only a Hub text source does, when read); the GLUE side is the recipe's
(``hf_lln.recipes.glue.teacher``).
"""

from hf_lln.transfer.distill import distillation_loss, distillation_objective, layers_loss
from hf_lln.transfer.loop import (
    END_TO_END_LOSSES,
    END_TO_END_TRAIN,
    TransferReport,
    TransferRun,
    TransferSettings,
    check_models,
    encoder_layers,
    transfer_attention,
)
from hf_lln.transfer.matching import LOSSES
from hf_lln.transfer.params import TRAIN_MODES, attention_parameters
from hf_lln.transfer.texts import TextSource, load_texts, text_batches

__all__ = [
    "END_TO_END_LOSSES",
    "END_TO_END_TRAIN",
    "LOSSES",
    "TRAIN_MODES",
    "TextSource",
    "TransferReport",
    "TransferRun",
    "TransferSettings",
    "attention_parameters",
    "check_models",
    "distillation_loss",
    "distillation_objective",
    "encoder_layers",
    "layers_loss",
    "load_texts",
    "text_batches",
    "transfer_attention",
]
