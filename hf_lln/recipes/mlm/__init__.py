"""Masked-language-model pretraining pieces used by ``hf_lln.recipes.run_mlm``.

- ``arguments``: the script's model/tokenizer/data flags (``add_mlm_arguments``, ``check_mlm_arguments``).
- ``model``: presets shipped as JSON in ``presets/`` (``lln-roberta-tiny``, ``-small``, ``-base``),
  config loading, position embeddings sized to ``--max_seq_length``, the model, its vocabulary padded to a
  multiple of 64 (``pad_vocabulary``).
- ``tokenizer``: the named tokenizer, or one trained on the data (byte-level BPE / WordPiece).
- ``data``: Hub dataset, local text/json/csv files or the bundled corpus (``corpus/``); blocks or
  lines; dataloaders.
- ``objective``: masking inside the training step, the loss projecting only the masked positions onto the
  vocabulary (``masked_lm_loss``), evaluation loss and perplexity.
"""

from hf_lln.recipes.mlm.arguments import DEFAULT_PRESET, add_mlm_arguments, check_mlm_arguments
from hf_lln.recipes.mlm.data import (
    DEFAULT_CORPUS,
    load_default_corpus,
    load_raw_datasets,
    make_dataloaders,
    text_column,
    tokenize_for_mlm,
)
from hf_lln.recipes.mlm.model import (
    PRESETS,
    build_model,
    load_config,
    pad_vocabulary,
    preset_config,
    resolve_max_seq_length,
)
from hf_lln.recipes.mlm.objective import MaskedLanguageModeling, masked_lm_loss
from hf_lln.recipes.mlm.tokenizer import tokenizer_for_run

__all__ = [
    "DEFAULT_CORPUS",
    "DEFAULT_PRESET",
    "PRESETS",
    "MaskedLanguageModeling",
    "add_mlm_arguments",
    "build_model",
    "check_mlm_arguments",
    "load_config",
    "load_default_corpus",
    "load_raw_datasets",
    "make_dataloaders",
    "masked_lm_loss",
    "pad_vocabulary",
    "preset_config",
    "resolve_max_seq_length",
    "text_column",
    "tokenize_for_mlm",
    "tokenizer_for_run",
]
