"""hf_lln: linear-complexity attention (LLN, LLN+Diag, cheap linear attention and baselines) for Transformers.

``import hf_lln`` registers the attention variants (``ATTENTION_VARIANTS``) with Transformers'
``AttentionInterface`` and ``AttentionMaskInterface``, so any model using the interface accepts
``attn_implementation="lln_diag"`` and the others; and registers the LLN configs and model classes with the Auto
classes, so ``AutoModel*.from_pretrained`` of a saved LLN folder gives the LLN class.
"""

from hf_lln.integration import register_attention_variants
from hf_lln.models import (
    LLNBertConfig,
    LLNBertForMaskedLM,
    LLNBertForMultipleChoice,
    LLNBertForQuestionAnswering,
    LLNBertForSequenceClassification,
    LLNBertForTokenClassification,
    LLNBertModel,
    LLNRobertaConfig,
    LLNRobertaForMaskedLM,
    LLNRobertaForMultipleChoice,
    LLNRobertaForQuestionAnswering,
    LLNRobertaForSequenceClassification,
    LLNRobertaForTokenClassification,
    LLNRobertaModel,
    register_auto_classes,
)
from hf_lln.variants import ATTENTION_VARIANTS

register_attention_variants()
register_auto_classes()

__all__ = [
    "ATTENTION_VARIANTS",
    "LLNBertConfig",
    "LLNBertForMaskedLM",
    "LLNBertForMultipleChoice",
    "LLNBertForQuestionAnswering",
    "LLNBertForSequenceClassification",
    "LLNBertForTokenClassification",
    "LLNBertModel",
    "LLNRobertaConfig",
    "LLNRobertaForMaskedLM",
    "LLNRobertaForMultipleChoice",
    "LLNRobertaForQuestionAnswering",
    "LLNRobertaForSequenceClassification",
    "LLNRobertaForTokenClassification",
    "LLNRobertaModel",
]
