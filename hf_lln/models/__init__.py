"""LLN configs and model classes for BERT and RoBERTa, their Auto registration, and ``to_lln`` for stock models."""

from hf_lln.models.auto import register_auto_classes
from hf_lln.models.configuration_lln import LLNBertConfig, LLNRobertaConfig
from hf_lln.models.modeling_lln import (
    AUTO_MODEL_CLASSES,
    LLNBertForMaskedLM,
    LLNBertForMultipleChoice,
    LLNBertForQuestionAnswering,
    LLNBertForSequenceClassification,
    LLNBertForTokenClassification,
    LLNBertModel,
    LLNMixWeights,
    LLNRobertaForMaskedLM,
    LLNRobertaForMultipleChoice,
    LLNRobertaForQuestionAnswering,
    LLNRobertaForSequenceClassification,
    LLNRobertaForTokenClassification,
    LLNRobertaModel,
)
from hf_lln.models.stock import install_save_warning, to_lln

__all__ = [
    "AUTO_MODEL_CLASSES",
    "LLNBertConfig",
    "LLNBertForMaskedLM",
    "LLNBertForMultipleChoice",
    "LLNBertForQuestionAnswering",
    "LLNBertForSequenceClassification",
    "LLNBertForTokenClassification",
    "LLNBertModel",
    "LLNMixWeights",
    "LLNRobertaConfig",
    "LLNRobertaForMaskedLM",
    "LLNRobertaForMultipleChoice",
    "LLNRobertaForQuestionAnswering",
    "LLNRobertaForSequenceClassification",
    "LLNRobertaForTokenClassification",
    "LLNRobertaModel",
    "install_save_warning",
    "register_auto_classes",
    "to_lln",
]
