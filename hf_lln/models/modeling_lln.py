"""LLN model classes: the stock BERT and RoBERTa classes with the configured ``lln_variant`` as default attention.

Each class subclasses its stock class (same modules, same weight names, so softmax checkpoints load as they are)
through ``LLNModelMixin``, which adds three things: the default attention implementation comes from
``config.lln_variant``; with a learnable ``lln_mix_mode`` every self-attention module gets an ``lln_mix``
(``LLNMixWeights``) holding the LLN+Diag mix weights, saved with the model; and ``save_pretrained`` records the
hf_lln attention the model runs as ``lln_variant`` (so a model switched with ``set_attn_implementation`` or loaded
with ``attn_implementation=`` reloads with that attention) and writes the remote code
(``hf_lln.remote_code.export_remote_code``) so that ``trust_remote_code=True`` loads the folder without hf_lln
installed.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn
from transformers import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)
from transformers import initialization as init
from transformers.models.bert.modeling_bert import BertSelfAttention
from transformers.models.roberta.modeling_roberta import RobertaSelfAttention

from hf_lln.integration.attention import register_attention_variants
from hf_lln.models.configuration_lln import LLNBertConfig, LLNRobertaConfig
from hf_lln.variants import ATTENTION_VARIANTS

# Writing remote code and uploading are hf_lln's, not the model's: a folder's remote-code copy of this module
# carries neither (hf_lln.remote_code), and there Transformers' own save and upload take over.
try:
    from hf_lln import hub, remote_code
except ImportError:
    hub = remote_code = None

# The classes below default to these implementations, so they must be registered wherever the classes are.
register_attention_variants()

MIX_INIT = 0.5


class LLNMixWeights(nn.Module):
    """LLN+Diag mix weights of one attention layer, each ``(heads, head_dim)``, initialised to 0.5 (the average):
    ``lln_weight`` (both learnable modes) and ``diag_weight`` (``learnable_scale`` only, else None)."""

    def __init__(self, heads: int, head_dim: int, mix_mode: str):
        super().__init__()
        self.lln_weight = nn.Parameter(torch.full((heads, head_dim), MIX_INIT))
        diag_weight = (
            nn.Parameter(torch.full((heads, head_dim), MIX_INIT)) if mix_mode == "learnable_scale" else None
        )
        self.register_parameter("diag_weight", diag_weight)


class LLNModelMixin:
    """Turns a stock BERT/RoBERTa model class into its LLN class; ``_self_attention_class`` names the modules that
    receive the learnable mix weights."""

    _self_attention_class: type[nn.Module]

    def post_init(self):
        self.add_mix_weights()
        super().post_init()

    def add_mix_weights(self) -> None:
        """Give every self-attention module that has none the ``lln_mix`` weights of ``config.lln_mix_mode`` (none
        for ``"average"``): ``LLNMixWeights``, each ``(heads, head_dim)`` at 0.5, on the device and in the dtype of
        the module's query weight."""
        mix_mode = self.config.lln_mix_mode
        if mix_mode == "average":
            return
        for module in self.modules():
            if isinstance(module, self._self_attention_class) and not hasattr(module, "lln_mix"):
                weights = LLNMixWeights(module.num_attention_heads, module.attention_head_size, mix_mode)
                module.lln_mix = weights.to(module.query.weight)

    @torch.no_grad()
    def initialize_weights(self):
        super().initialize_weights()
        # A head's stock base model (``self.bert``) initialises its sub-tree with the stock ``_init_weights``, which
        # does not know the mix weights; ``init.constant_`` leaves weights loaded from a checkpoint alone.
        for module in self.modules():
            if isinstance(module, LLNMixWeights):
                for weight in (module.lln_weight, module.diag_weight):
                    if weight is not None:
                        init.constant_(weight, MIX_INIT)

    def get_correct_attn_implementation(
        self, requested_attention: str | None, is_init_check: bool = False
    ) -> str:
        if requested_attention is None:
            requested_attention = self.config.lln_variant
        return super().get_correct_attn_implementation(requested_attention, is_init_check)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        """``PreTrainedModel.save_pretrained``, plus the remote code and its ``auto_map`` in ``config.json``; with
        ``push_to_hub=True`` the folder is uploaded after both are written (``repo_id`` defaults to its name).

        The hf_lln attention the model runs becomes ``config.lln_variant`` first, so the folder reloads with it; a
        model running another attention (``sdpa``, ``eager``, ...) is saved with its ``lln_variant`` and a warning.
        """
        self._record_attention()
        if remote_code is None:  # the remote-code copy: Transformers copies its own files
            return super().save_pretrained(save_directory, *args, push_to_hub=push_to_hub, **kwargs)
        hub_kwargs = {
            key: kwargs.pop(key)
            for key in ("repo_id", "commit_message", "create_pr", "private")
            if key in kwargs
        }
        classes = AUTO_MODEL_CLASSES[self.config.model_type]
        self.config.auto_map = {
            auto_name: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"
            for auto_name, cls in classes.items()
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            remote_code.export_remote_code(save_directory, type(self))
            if push_to_hub:
                repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
                hub.push_folder_to_hub(save_directory, repo_id, token=kwargs.get("token"), **hub_kwargs)

    def _record_attention(self) -> None:
        """Set ``config.lln_variant`` to the hf_lln attention the model runs (``config._attn_implementation``);
        warn, naming the attention and the fix, when it runs one that an LLN config cannot record."""
        attention = self.config._attn_implementation
        if attention in ATTENTION_VARIANTS:
            self.config.lln_variant = attention
            return
        warnings.warn(
            f"{type(self).__name__} runs attn_implementation={attention!r}, which its config cannot record: the "
            f"saved model reloads with lln_variant={self.config.lln_variant!r}. Pass attn_implementation="
            f"{attention!r} to from_pretrained when loading it again, or switch to an hf_lln attention with "
            "model.set_attn_implementation(...) before saving",
            stacklevel=3,
        )


class LLNBertModel(LLNModelMixin, BertModel):
    config_class = LLNBertConfig
    _self_attention_class = BertSelfAttention


class LLNBertForMaskedLM(LLNModelMixin, BertForMaskedLM):
    config_class = LLNBertConfig
    _self_attention_class = BertSelfAttention


class LLNBertForSequenceClassification(LLNModelMixin, BertForSequenceClassification):
    config_class = LLNBertConfig
    _self_attention_class = BertSelfAttention


class LLNBertForTokenClassification(LLNModelMixin, BertForTokenClassification):
    config_class = LLNBertConfig
    _self_attention_class = BertSelfAttention


class LLNBertForQuestionAnswering(LLNModelMixin, BertForQuestionAnswering):
    config_class = LLNBertConfig
    _self_attention_class = BertSelfAttention


class LLNBertForMultipleChoice(LLNModelMixin, BertForMultipleChoice):
    config_class = LLNBertConfig
    _self_attention_class = BertSelfAttention


class LLNRobertaModel(LLNModelMixin, RobertaModel):
    config_class = LLNRobertaConfig
    _self_attention_class = RobertaSelfAttention


class LLNRobertaForMaskedLM(LLNModelMixin, RobertaForMaskedLM):
    config_class = LLNRobertaConfig
    _self_attention_class = RobertaSelfAttention


class LLNRobertaForSequenceClassification(LLNModelMixin, RobertaForSequenceClassification):
    config_class = LLNRobertaConfig
    _self_attention_class = RobertaSelfAttention


class LLNRobertaForTokenClassification(LLNModelMixin, RobertaForTokenClassification):
    config_class = LLNRobertaConfig
    _self_attention_class = RobertaSelfAttention


class LLNRobertaForQuestionAnswering(LLNModelMixin, RobertaForQuestionAnswering):
    config_class = LLNRobertaConfig
    _self_attention_class = RobertaSelfAttention


class LLNRobertaForMultipleChoice(LLNModelMixin, RobertaForMultipleChoice):
    config_class = LLNRobertaConfig
    _self_attention_class = RobertaSelfAttention


# model_type -> Auto class name -> class; drives the Auto registration and the remote code's auto_map.
AUTO_MODEL_CLASSES: dict[str, dict[str, type]] = {
    "lln_bert": {
        "AutoConfig": LLNBertConfig,
        "AutoModel": LLNBertModel,
        "AutoModelForMaskedLM": LLNBertForMaskedLM,
        "AutoModelForSequenceClassification": LLNBertForSequenceClassification,
        "AutoModelForTokenClassification": LLNBertForTokenClassification,
        "AutoModelForQuestionAnswering": LLNBertForQuestionAnswering,
        "AutoModelForMultipleChoice": LLNBertForMultipleChoice,
    },
    "lln_roberta": {
        "AutoConfig": LLNRobertaConfig,
        "AutoModel": LLNRobertaModel,
        "AutoModelForMaskedLM": LLNRobertaForMaskedLM,
        "AutoModelForSequenceClassification": LLNRobertaForSequenceClassification,
        "AutoModelForTokenClassification": LLNRobertaForTokenClassification,
        "AutoModelForQuestionAnswering": LLNRobertaForQuestionAnswering,
        "AutoModelForMultipleChoice": LLNRobertaForMultipleChoice,
    },
}
