"""``LLNBertConfig`` and ``LLNRobertaConfig``: the stock configs plus the ``lln_*`` fields that choose and tune the
attention. The fields are saved in ``config.json`` and checked when the config is built."""

from __future__ import annotations

from dataclasses import dataclass

from huggingface_hub.dataclasses import strict
from transformers import BertConfig, RobertaConfig

from hf_lln.integration.attention import LLN_CONFIG_DEFAULTS, check_lln_settings


@dataclass(kw_only=True)
class LLNAttentionFields:
    """The ``lln_*`` fields shared by both families.

    - ``lln_variant``: default attention implementation, one of ``hf_lln.ATTENTION_VARIANTS``.
    - ``lln_block_size``: LLN+Diag softmax block size (None = head size).
    - ``lln_mix_mode``: LLN+Diag mix, ``"average"``, ``"learnable_scale"`` or ``"learnable_ratio"``.
    - ``lln_eps``: floor of the linear-attention normalisers.
    - ``lln_stats``: LLN moment statistics, ``"per_sequence"`` or ``"global"``.
    - ``lln_performer_features``, ``lln_performer_seed``: Performer random features (layer ``i`` uses seed + i).
    """

    lln_variant: str = LLN_CONFIG_DEFAULTS["lln_variant"]
    lln_block_size: int | None = LLN_CONFIG_DEFAULTS["lln_block_size"]
    lln_mix_mode: str = LLN_CONFIG_DEFAULTS["lln_mix_mode"]
    lln_eps: float | int = LLN_CONFIG_DEFAULTS["lln_eps"]
    lln_stats: str = LLN_CONFIG_DEFAULTS["lln_stats"]
    lln_performer_features: int = LLN_CONFIG_DEFAULTS["lln_performer_features"]
    lln_performer_seed: int = LLN_CONFIG_DEFAULTS["lln_performer_seed"]

    def validate_lln_settings(self) -> None:
        """Part of the ``@strict`` validation run when the config is built."""
        check_lln_settings(**{name: getattr(self, name) for name in LLN_CONFIG_DEFAULTS})


@strict
class LLNBertConfig(BertConfig, LLNAttentionFields):
    """``BertConfig`` with the ``lln_*`` attention fields (see ``LLNAttentionFields``)."""

    model_type = "lln_bert"


@strict
class LLNRobertaConfig(RobertaConfig, LLNAttentionFields):
    """``RobertaConfig`` with the ``lln_*`` attention fields (see ``LLNAttentionFields``)."""

    model_type = "lln_roberta"
