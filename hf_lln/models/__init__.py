"""LLN configs and model classes for BERT and RoBERTa, and their Auto registration.

The names load on first use: the configuration module is read by the attention functions that the model
module registers, so importing both eagerly here would make them import each other.
"""

import importlib

_HOMES = {
    "LLNBertConfig": "configuration_lln",
    "LLNRobertaConfig": "configuration_lln",
    "register_auto_classes": "auto",
    "to_lln": "stock",
    "install_save_warning": "stock",
    **{
        name: "modeling_lln"
        for name in (
            "AUTO_MODEL_CLASSES",
            "LLNMixWeights",
            "LLNBertModel",
            "LLNBertForMaskedLM",
            "LLNBertForMultipleChoice",
            "LLNBertForQuestionAnswering",
            "LLNBertForSequenceClassification",
            "LLNBertForTokenClassification",
            "LLNRobertaModel",
            "LLNRobertaForMaskedLM",
            "LLNRobertaForMultipleChoice",
            "LLNRobertaForQuestionAnswering",
            "LLNRobertaForSequenceClassification",
            "LLNRobertaForTokenClassification",
        )
    },
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
