"""LLN configs and model classes for BERT and RoBERTa, and their Auto registration."""

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
    "register_auto_classes",
]
