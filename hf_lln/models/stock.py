"""Stock BERT/RoBERTa models running an hf_lln attention: ``to_lln`` makes them LLN models in place, and saving one
that is not converted warns that the attention will be lost.

Transformers does not save ``attn_implementation``: a stock model loaded with ``attn_implementation="lln"`` or
switched with ``set_attn_implementation("lln")`` reloads with softmax. ``to_lln(model)`` turns it (or every such
model inside a ``SentenceTransformer``, a PEFT model or any other module) into its LLN class, whose config records
the attention as ``lln_variant``, so ``save_pretrained``, ``SentenceTransformer.save`` and ``push_to_hub`` keep it.
``install_save_warning`` (run by ``import hf_lln``) makes ``PreTrainedModel.save_pretrained`` warn, naming the
attention and this fix, when a model without an LLN config that runs an hf_lln attention is saved.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator

from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from hf_lln.models.configuration_lln import LLN_SETTINGS_DEFAULTS, lln_config_from
from hf_lln.models.modeling_lln import AUTO_MODEL_CLASSES, LLNModelMixin
from hf_lln.variants import ATTENTION_VARIANTS

# Stock class -> its LLN class (each LLN class subclasses exactly one stock class, its last base).
LLN_CLASS_OF: dict[type[PreTrainedModel], type[PreTrainedModel]] = {
    model_class.__bases__[-1]: model_class
    for classes in AUTO_MODEL_CLASSES.values()
    for auto_name, model_class in classes.items()
    if auto_name != "AutoConfig"
}


def to_lln(model: nn.Module, variant: str | None = None, **lln_settings) -> nn.Module:
    """Turn the BERT/RoBERTa model(s) in ``model`` into LLN models in place, so that they save and reload with
    their hf_lln attention; returns ``model`` itself.

    ``model`` is a stock model of a class with an LLN counterpart (``BertModel``, ``BertForMaskedLM``,
    ``BertForSequenceClassification``, ``BertForTokenClassification``, ``BertForQuestionAnswering``,
    ``BertForMultipleChoice`` and the RoBERTa ones), an LLN model, or any module holding such models (a
    ``SentenceTransformer``, a PEFT model, a DDP wrapper): each outermost Transformers model inside it gets

    - its LLN class (``BertForSequenceClassification`` -> ``LLNBertForSequenceClassification``; the object, its
      modules and its weights stay the same, so optimizers and wrappers holding them keep working);
    - an LLN config equal to its config plus ``lln_variant=variant`` and ``lln_settings`` (``lln_block_size``,
      ``lln_mix_mode``, ``lln_eps``, ``lln_stats``, ``lln_performer_features``, ``lln_performer_seed``; the others
      keep their values), shared by all its modules as before;
    - ``variant`` as attention implementation, and, for a learnable ``lln_mix_mode``, new LLN+Diag mix weights
      ``(heads, head_dim)`` at 0.5 (the average mix) in every attention layer (build the optimizer after this
      call, or add them to it, to train them).

    ``variant`` defaults to the hf_lln attention the model runs, else its ``lln_variant`` (LLN model) or
    ``"lln_diag"``. The outputs are unchanged when the model already ran ``variant`` with the same settings (a
    stock model runs the ``"average"`` mix). An LLN model's ``lln_mix_mode`` cannot change (its mix weights are
    part of it). Raises before changing anything when a model inside cannot be converted or a setting is invalid.
    """
    if variant is not None and variant not in ATTENTION_VARIANTS:
        raise ValueError(
            f"variant must be one of {', '.join(map(repr, ATTENTION_VARIANTS))}; got {variant!r}"
        )
    models = list(_outermost_models(model))
    if not models:
        raise TypeError(
            f"to_lln needs a BERT/RoBERTa model or a module holding one; {type(model).__name__} holds no "
            "Transformers model"
        )
    plans = [(found, _lln_class(found), _lln_config(found, variant, lln_settings)) for found in models]
    for found, lln_class, config in plans:
        old_config = found.config
        for module in found.modules():
            if getattr(module, "config", None) is old_config:
                module.config = config
        found.__class__ = lln_class
        found.add_mix_weights()
        found.set_attn_implementation(config.lln_variant)
    return model


def _outermost_models(module: nn.Module) -> Iterator[PreTrainedModel]:
    """The Transformers models in ``module`` (itself included) that no other Transformers model in it holds."""
    if isinstance(module, PreTrainedModel):
        yield module
        return
    for child in module.children():
        yield from _outermost_models(child)


def _lln_class(model: PreTrainedModel) -> type[PreTrainedModel]:
    if isinstance(model, LLNModelMixin):
        return type(model)
    if type(model) not in LLN_CLASS_OF:
        supported = ", ".join(sorted(cls.__name__ for cls in LLN_CLASS_OF))
        raise TypeError(f"to_lln: {type(model).__name__} has no LLN class; supported classes: {supported}")
    return LLN_CLASS_OF[type(model)]


def _lln_config(model: PreTrainedModel, variant: str | None, lln_settings: dict) -> PreTrainedConfig:
    config = model.config
    if variant is None:
        running = config._attn_implementation
        default = getattr(config, "lln_variant", LLN_SETTINGS_DEFAULTS["lln_variant"])
        variant = running if running in ATTENTION_VARIANTS else default
    mix_mode = lln_settings.get("lln_mix_mode")
    if isinstance(model, LLNModelMixin) and mix_mode not in (None, config.lln_mix_mode):
        raise ValueError(
            f"to_lln: lln_mix_mode={mix_mode!r}, but {type(model).__name__} already has "
            f"lln_mix_mode={config.lln_mix_mode!r} and its mix weights; convert the saved checkpoint instead "
            "(hf-lln convert SRC DST --mix_mode ...)"
        )
    return lln_config_from(config, lln_variant=variant, **lln_settings)


def attention_lost_on_save(model: PreTrainedModel) -> str | None:
    """The warning for saving ``model``, or None: a Transformers model in it without an LLN config (which would
    record the attention) runs an hf_lln attention, which its saved folder cannot record."""
    for module in model.modules():
        if not isinstance(module, PreTrainedModel) or hasattr(module.config, "lln_variant"):
            continue
        attention = module.config._attn_implementation
        if attention not in ATTENTION_VARIANTS:
            continue
        lost = (
            f"{type(module).__name__} runs attn_implementation={attention!r}, which a stock "
            f"{type(module.config).__name__} does not save: the saved folder reloads with Transformers' default "
            "(softmax) attention."
        )
        if type(module) in LLN_CLASS_OF:
            return (
                f"{lost} Call hf_lln.to_lln(model) on this model (or on the SentenceTransformer holding it) before "
                f"saving: it becomes an {LLN_CLASS_OF[type(module)].__name__}, which saves "
                f"lln_variant={attention!r}. Or pass attn_implementation={attention!r} again when loading it"
            )
        return f"{lost} Pass attn_implementation={attention!r} again when loading it"
    return None


def install_save_warning() -> None:
    """Make ``PreTrainedModel.save_pretrained`` warn with ``attention_lost_on_save`` before saving (idempotent;
    the save itself is unchanged)."""
    save_pretrained = PreTrainedModel.save_pretrained
    if getattr(save_pretrained, "_hf_lln_warns", False):
        return

    @functools.wraps(save_pretrained)
    def warning_save_pretrained(self, *args, **kwargs):
        message = attention_lost_on_save(self)
        if message is not None:
            warnings.warn(message, stacklevel=2)
        return save_pretrained(self, *args, **kwargs)

    warning_save_pretrained._hf_lln_warns = True
    PreTrainedModel.save_pretrained = warning_save_pretrained
