"""Registration of the LLN configs and model classes with ``AutoConfig`` and the ``AutoModel*`` classes."""

from __future__ import annotations

import transformers

from hf_lln.models.modeling_lln import AUTO_MODEL_CLASSES


def register_auto_classes() -> None:
    """After this, ``AutoConfig``/``AutoModel*.from_pretrained`` of a saved LLN folder give the LLN classes
    (idempotent)."""
    for model_type, classes in AUTO_MODEL_CLASSES.items():
        config_class = classes["AutoConfig"]
        transformers.AutoConfig.register(model_type, config_class, exist_ok=True)
        for auto_name, model_class in classes.items():
            if auto_name != "AutoConfig":
                getattr(transformers, auto_name).register(config_class, model_class, exist_ok=True)
