"""``LLNBertConfig`` and ``LLNRobertaConfig``: the stock configs plus the ``lln_*`` fields that choose and tune the
attention. This module owns those fields (default, meaning, validation) and the one conversion between stock and
LLN configs; every other module reads them from here.

A stock BERT/RoBERTa config has no ``lln_*`` fields: an hf_lln attention run on a stock model reads the defaults,
with the block size of a conversion (:func:`lln_settings`, :func:`converted_block_size`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, BertConfig, PretrainedConfig, RobertaConfig

from hf_lln.ops.lln_diag import MIX_MODES
from hf_lln.ops.moments import STATS_MODES
from hf_lln.variants import ATTENTION_VARIANTS, get_variant

LLN_MODEL_TYPES = {"bert": "lln_bert", "roberta": "lln_roberta"}


@dataclass(kw_only=True)
class LLNAttentionFields:
    """The ``lln_*`` fields shared by both families (``hf_lln.variants.VARIANTS[name].settings`` says which
    fields each variant reads).

    - ``lln_variant``: the attention the model runs by default, one of ``hf_lln.ATTENTION_VARIANTS``.
    - ``lln_block_size``: LLN+Diag softmax block size in tokens; None = the head size. A converted softmax checkpoint
      gets its head size but at least 64 (``converted_block_size``).
    - ``lln_mix_mode``: LLN+Diag mix, ``"average"``, ``"learnable_scale"`` or ``"learnable_ratio"`` (the learnable
      modes add per-layer mix weights, saved with the model).
    - ``lln_eps``: floor of the normaliser of every normalised linear attention (lln, lln_diag, linear_elu,
      performer, cosformer); it only turns rows without a real key into zeros.
    - ``lln_stats``: LLN moment statistics, ``"per_sequence"`` (over each sequence's real tokens) or ``"global"``.
    - ``lln_performer_features``, ``lln_performer_seed``: Performer random features (layer ``i`` uses seed + i).
    """

    lln_variant: str = "lln_diag"
    lln_block_size: int | None = None
    lln_mix_mode: str = "average"
    lln_eps: float | int = 1e-6
    lln_stats: str = "per_sequence"
    lln_performer_features: int = 256
    lln_performer_seed: int = 0

    def validate_lln_settings(self) -> None:
        """Part of the ``@strict`` validation run when the config is built."""
        check_lln_settings(**{name: getattr(self, name) for name in LLN_SETTINGS_DEFAULTS})


LLN_SETTINGS_DEFAULTS: dict = {field.name: field.default for field in fields(LLNAttentionFields)}


def _check_int(name: str, value, *, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{name} must be an integer >= {minimum}{' or None' if optional else ''}; got {value!r}"
        )


def check_lln_settings(**settings) -> None:
    """Raise ``ValueError`` naming the first invalid ``lln_*`` setting and the values it accepts (run by the LLN
    configs' ``@strict`` validation, which wraps it in a ``StrictDataclassError``)."""
    if "lln_variant" in settings:
        get_variant(settings["lln_variant"], "lln_variant")
    for name, allowed in (("lln_mix_mode", MIX_MODES), ("lln_stats", STATS_MODES)):
        if name in settings and settings[name] not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {settings[name]!r}")
    if "lln_block_size" in settings:
        _check_int("lln_block_size", settings["lln_block_size"], minimum=1, optional=True)
    if "lln_performer_features" in settings:
        _check_int("lln_performer_features", settings["lln_performer_features"], minimum=1)
    if "lln_performer_seed" in settings:
        _check_int("lln_performer_seed", settings["lln_performer_seed"], minimum=0)
    eps = settings.get("lln_eps", 1.0)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"lln_eps must be a number > 0; got {eps!r}")


# LLN+Diag's softmax blocks in a converted softmax checkpoint are the head size but never shorter than this: blocks
# of MiniLM's 32-dim heads cut a GLUE sentence pair into pieces, and 64-token blocks lifted its fine-tuned
# conversion on MRPC from 98.2% to 100.6% of the softmax teacher's score (docs/quality.md, fourth study).
CONVERTED_MIN_BLOCK_SIZE = 64


def converted_block_size(config: PretrainedConfig) -> int | None:
    """The LLN+Diag block size of a softmax ``config`` converted to hf_lln: its head size, at least
    ``CONVERTED_MIN_BLOCK_SIZE``; None (the head size, at run time) for a config that does not give its head size."""
    head = getattr(config, "head_dim", None)
    if head is None:
        hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
        if not isinstance(hidden, int) or not isinstance(heads, int) or heads < 1:
            return None
        head = hidden // heads
    return max(head, CONVERTED_MIN_BLOCK_SIZE)


def lln_settings(config: PretrainedConfig | None) -> dict:
    """Every ``lln_*`` setting of ``config``: its own fields, the defaults where it has none. A stock config (a
    softmax checkpoint run with an hf_lln attention) has none, and gets the converted block size
    (``converted_block_size``), which ``lln_config_from`` writes into the LLN config of a conversion."""
    defaults = LLN_SETTINGS_DEFAULTS
    if config is not None and not is_lln_config(config):
        defaults = {**defaults, "lln_block_size": converted_block_size(config)}
    return {name: getattr(config, name, default) for name, default in defaults.items()}


@strict
class LLNBertConfig(BertConfig, LLNAttentionFields):
    """``BertConfig`` with the ``lln_*`` attention fields (see ``LLNAttentionFields``)."""

    model_type = "lln_bert"


@strict
class LLNRobertaConfig(RobertaConfig, LLNAttentionFields):
    """``RobertaConfig`` with the ``lln_*`` attention fields (see ``LLNAttentionFields``)."""

    model_type = "lln_roberta"


LLN_CONFIG_CLASSES = {"lln_bert": LLNBertConfig, "lln_roberta": LLNRobertaConfig}
# Fields a saved config carries that describe the saved folder rather than the model.
_FOLDER_FIELDS = ("model_type", "auto_map", "architectures")


def is_lln_config(config: PretrainedConfig) -> bool:
    return config.model_type in LLN_CONFIG_CLASSES


def lln_config_from(config: PretrainedConfig, **settings) -> PretrainedConfig:
    """The LLN config equal to a stock (or LLN) BERT/RoBERTa ``config`` with the ``lln_*`` fields in ``settings``
    set (the others keep their values, or the defaults; the LLN config validates them); ``architectures`` is
    kept."""
    if config.model_type not in LLN_MODEL_TYPES and not is_lln_config(config):
        supported = sorted([*LLN_MODEL_TYPES, *LLN_CONFIG_CLASSES])
        raise ValueError(
            f"config must be a BERT or RoBERTa config (model_type one of {supported}), got {config.model_type!r}"
        )
    unknown = sorted(set(settings) - set(LLN_SETTINGS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown LLN settings {unknown}; the settings are {sorted(LLN_SETTINGS_DEFAULTS)}")
    values = {key: value for key, value in config.to_dict().items() if key not in _FOLDER_FIELDS}
    if not is_lln_config(config):  # the settings a stock config runs with, written down so they reload
        values = {**lln_settings(config), **values}
    model_type = LLN_MODEL_TYPES.get(config.model_type, config.model_type)
    lln = LLN_CONFIG_CLASSES[model_type](**{**values, **settings})
    lln.architectures = config.architectures
    return lln


def stock_config_from(config: PretrainedConfig) -> PretrainedConfig:
    """The stock BERT/RoBERTa config of an LLN ``config`` (its ``lln_*`` fields dropped); a stock config as is."""
    if not is_lln_config(config):
        return config
    values = {
        key: value
        for key, value in config.to_dict().items()
        if key not in _FOLDER_FIELDS and key not in LLN_SETTINGS_DEFAULTS
    }
    stock = AutoConfig.for_model(config.model_type.removeprefix("lln_"), **values)
    stock.architectures = [name.removeprefix("LLN") for name in config.architectures or []] or None
    return stock


def config_for_attention(config: PretrainedConfig, attn_implementation: str | None) -> PretrainedConfig:
    """A config whose saved model reloads with the attention it was trained with.

    An hf_lln variant becomes the ``lln_variant`` of an LLN config (a stock BERT/RoBERTa config is turned into its
    LLN counterpart); a softmax implementation (``sdpa``, ``eager``, ...) on an LLN config gives the stock config
    of the family, so a softmax model is saved as a plain BERT/RoBERTa; None keeps ``config``.
    """
    if attn_implementation is None:
        return config
    if attn_implementation in ATTENTION_VARIANTS:
        if config.model_type not in LLN_MODEL_TYPES and not is_lln_config(config):
            raise ValueError(
                f"attn_implementation {attn_implementation!r}: hf_lln models are BERT or RoBERTa, "
                f"got model_type {config.model_type!r}"
            )
        return lln_config_from(config, lln_variant=attn_implementation)
    return stock_config_from(config)


def position_offset(config: PretrainedConfig) -> int:
    """Position-table rows before the first token: RoBERTa counts positions from ``pad_token_id + 1``; 0 for
    BERT."""
    return config.pad_token_id + 1 if "roberta" in config.model_type else 0
