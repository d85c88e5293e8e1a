"""hf_lln: linear-complexity attention (LLN, LLN+Diag, cheap linear attention and baselines) for Transformers.

``import hf_lln`` registers the attention variants (``ATTENTION_VARIANTS``) with Transformers'
``AttentionInterface`` and ``AttentionMaskInterface``, so any model using the interface accepts
``attn_implementation="lln_diag"`` and the others; and registers the LLN configs and model classes with the Auto
classes, so ``AutoModel*.from_pretrained`` of a saved LLN folder gives the LLN class. ``to_lln(model)`` turns a stock
BERT/RoBERTa model (or every one in a SentenceTransformer) into its LLN class in place, so that it saves with its
attention; saving a stock model that runs an hf_lln attention warns that the attention would be lost.
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
    install_save_warning,
    register_auto_classes,
    to_lln,
)
from hf_lln.variants import ATTENTION_VARIANTS

register_attention_variants()
register_auto_classes()
install_save_warning()

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
    "to_lln",
]
