"""Hub sharing: model cards and folder upload (the remote code a saved folder carries is ``hf_lln.remote_code``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from hf_lln._permissions import file_mode
from hf_lln.models.configuration_lln import lln_settings
from hf_lln.variants import VARIANTS, description

# A link to model_cards/lln_model_card.md, so that wheels (which copy its content) carry the template too.
MODEL_CARD_TEMPLATE = Path(__file__).parent / "model_card_template.md"

PIPELINE_TAGS = {
    "ForMaskedLM": "fill-mask",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMultipleChoice": "multiple-choice",
    "Model": "feature-extraction",
}

# Until hf_lln is on PyPI, the card says how to install it for real.
INSTALL_INSTRUCTIONS = (
    "Install hf_lln from its git repository (`pip install git+<repository URL>`) or from a local clone "
    "(`pip install -e path/to/hf_lln`); it is not on PyPI yet."
)


@dataclass(frozen=True)
class ConversionNote:
    """How ``hf-lln convert`` made a model, for its card: ``source``, the softmax checkpoint (a Hub id, or a
    local folder's name), and ``source_positions``, the tokens the source read when the position table was
    extended (None when it was not)."""

    source: str
    source_positions: int | None = None


def attention_settings(config, variant: str) -> dict[str, object]:
    """The ``lln_*`` settings the variant's attention reads (``hf_lln.variants``), with the values in effect
    (``lln_block_size`` None is the head size); empty for softmax."""
    if variant not in VARIANTS:
        return {}
    values = lln_settings(config)
    settings = {"lln_variant": variant}
    for name in VARIANTS[variant].settings:
        value = values[name]
        if name == "lln_block_size" and value is None:
            head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            value = f"{head_size} (the head size)"
        settings[name] = value
    return settings


def _architecture(config) -> str:
    architectures = getattr(config, "architectures", None) or []
    return architectures[0] if architectures else ""


def eval_results_table(eval_results: Iterable[EvalResult]) -> list[tuple[str, str, str, float]]:
    """Rows ``(task, dataset, metric, value)`` of the results, as the card's table shows them."""
    return [
        (
            result.task_name or result.task_type,
            result.dataset_name,
            result.metric_name or result.metric_type,
            result.metric_value,
        )
        for result in eval_results
    ]


def build_model_card(
    config,
    *,
    model_name: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    eval_results: Sequence[EvalResult] = (),
    training_summary: str | None = None,
    conversion: ConversionNote | None = None,
) -> ModelCard:
    """The model card of an LLN model: metadata (library, tags, datasets, base model, a ``model-index`` from
    ``eval_results`` when there are some) and the body from ``model_cards/lln_model_card.md``.

    ``config`` is the saved model's config (an LLN config, or a stock one with ``_attn_implementation`` set to a
    variant); ``model_name`` names the model in the card and the ``model-index`` (default ``"hf-lln-model"``).
    """
    eval_results = list(eval_results)
    for result in eval_results:
        if not isinstance(result, EvalResult):
            raise TypeError(
                f"eval_results must hold huggingface_hub.EvalResult objects, got {type(result).__name__}"
            )
    model_name = model_name or "hf-lln-model"
    # A stock config that never went through a model has no implementation yet: Transformers' default is sdpa.
    variant = getattr(config, "lln_variant", None) or config._attn_implementation or "sdpa"
    family = "RoBERTa" if "roberta" in config.model_type else "BERT"
    architecture = _architecture(config)
    pipeline_tag = next((tag for suffix, tag in PIPELINE_TAGS.items() if architecture.endswith(suffix)), None)
    card_data = ModelCardData(
        library_name="transformers",
        tags=["hf-lln", "linear-attention", variant, family.lower()],
        datasets=list(datasets) or None,
        base_model=base_model,
        eval_results=eval_results or None,
        model_name=model_name,
        pipeline_tag=pipeline_tag,
    )
    # What the attention function reads: the config's lln_* fields, the defaults for a stock config.
    settings = attention_settings(config, variant)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and "roberta" in config.model_type and config.pad_token_id is not None:
        positions -= config.pad_token_id + 1  # RoBERTa's positions start after the padding index
    auto_class = "AutoModel" + (architecture[architecture.index("For") :] if "For" in architecture else "")
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        family=family,
        variant=variant,
        variant_description=description(variant),
        settings=settings,
        auto_class=auto_class,
        base_model=base_model,
        training_summary=training_summary,
        results=eval_results_table(eval_results),
        conversion=conversion,
        source_is_hub=conversion is not None and conversion.source == base_model,
        positions=positions,
        install=INSTALL_INSTRUCTIONS,
    )


def write_model_card(
    output_dir: str | os.PathLike,
    config,
    *,
    model_name: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    eval_results: Sequence[EvalResult] = (),
    training_summary: str | None = None,
    conversion: ConversionNote | None = None,
) -> Path:
    """Build the model card (``build_model_card``; ``model_name`` defaults to the folder's name) and write it to
    ``output_dir/README.md``; returns that path."""
    output_dir = Path(output_dir)
    card = build_model_card(
        config,
        model_name=model_name or output_dir.resolve().name,
        base_model=base_model,
        datasets=datasets,
        eval_results=eval_results,
        training_summary=training_summary,
        conversion=conversion,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "README.md"
    _write_atomically(path, str(card))
    return path


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    ignore_patterns: Sequence[str] | None = None,
):
    """Upload a saved model folder (weights, config, remote code, README.md) to the Hub repo ``repo_id``, except
    files matching ``ignore_patterns`` (e.g. training checkpoints)."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message or "Upload hf_lln model",
        create_pr=create_pr,
        ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
    )


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False
    ) as file:
        file.write(text)
    # NamedTemporaryFile creates 0600: give the file the mode the user's umask gives any new file
    os.chmod(file.name, file_mode())
    os.replace(file.name, path)
