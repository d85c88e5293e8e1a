"""The GLUE-specific parts of fine-tuning: model and tokenizer for a task, tokenized splits, evaluation
with ``gather_for_metrics``, test predictions and the model card's fields.

``hf_lln.recipes.run_glue`` strings these together with :mod:`hf_lln.recipes.training`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from huggingface_hub import EvalResult
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    default_data_collator,
)

from hf_lln.models.configuration_lln import config_for_attention, position_offset
from hf_lln.recipes.glue.arguments import DEFAULT_MAX_LENGTH
from hf_lln.recipes.glue.metrics import glue_metric
from hf_lln.recipes.glue.tasks import HUB_DATASET, GlueTask
from hf_lln.recipes.training import model_init_kwargs

_METRIC_NAMES = {
    "matthews_correlation": "Matthews correlation",
    "accuracy": "Accuracy",
    "f1": "F1",
    "pearson": "Pearson correlation",
    "spearmanr": "Spearman correlation",
}
_METRIC_TYPES = {"pearson": "pearsonr"}
"""Hub metric ids (the ``evaluate`` metric names) where the GLUE metric's key differs."""


def check_model_inputs(args: argparse.Namespace) -> None:
    """``ValueError`` before any data is read or folder made: the config of ``--model_name_or_path`` must
    load, and ``--max_length`` must fit its position embeddings (else the first batch of long rows fails
    deep inside the embeddings). An unset ``--max_length`` becomes 128, or the model's positions when fewer."""
    try:
        config = AutoConfig.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    except OSError as error:
        raise ValueError(
            f"--model_name_or_path {args.model_name_or_path}: cannot load its config: {error}"
        ) from None
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None or not isinstance(getattr(config, "model_type", None), str):
        args.max_length = args.max_length or DEFAULT_MAX_LENGTH
        return
    usable = positions - (position_offset(config) if config.pad_token_id is not None else 0)
    if args.max_length is None:
        args.max_length = min(DEFAULT_MAX_LENGTH, usable)
    elif args.max_length > usable:
        raise ValueError(
            f"--max_length {args.max_length} is larger than the {usable} positions of --model_name_or_path "
            f"{args.model_name_or_path}; use --max_length {usable} or less (or extend the model's positions with "
            "`hf-lln convert --max_position`)"
        )


def load_classifier(task: GlueTask, args: argparse.Namespace):
    """``(model, tokenizer)`` for ``task`` from ``args.model_name_or_path``, stock or LLN checkpoint.

    The head has ``task.num_labels`` outputs named after the task's labels (one output and MSE loss
    for STS-B); ``--attn_implementation`` swaps the attention at load and is recorded in the config
    (``config_for_attention``: an hf_lln variant gives the LLN class, so the saved model reloads with it).
    """
    shared = {"trust_remote_code": args.trust_remote_code}
    config = AutoConfig.from_pretrained(
        args.model_name_or_path, num_labels=task.num_labels, finetuning_task=task.name, **shared
    )
    config = config_for_attention(config, args.attn_implementation)
    if task.is_regression:
        config.problem_type = "regression"
    else:
        config.problem_type = "single_label_classification"
        config.id2label = dict(enumerate(task.label_names))
        config.label2id = {label: index for index, label in enumerate(task.label_names)}
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, **shared)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_name_or_path,
        config=config,
        ignore_mismatched_sizes=args.ignore_mismatched_sizes,
        **shared,
        **model_init_kwargs(args),
    )
    return model, tokenizer


def tokenize_splits(
    splits: datasets.DatasetDict, task: GlueTask, tokenizer, max_length: int, pad_to_max_length: bool
) -> datasets.DatasetDict:
    """Tokenize the task's text columns (pairs as pairs), truncated to ``max_length``.

    Labelled splits keep ``labels``; test splits keep only the model inputs (their rows stay in
    order, so predictions line up with the split's ``idx``).
    """

    def encode(batch):
        texts = [batch[column] for column in task.text_columns]
        padding = "max_length" if pad_to_max_length else False
        return tokenizer(*texts, truncation=True, max_length=max_length, padding=padding)

    encoded = {}
    for split, dataset in splits.items():
        drop = [*task.text_columns, "idx"] + (["label"] if split.startswith("test") else [])
        dataset = dataset.map(
            encode, batched=True, remove_columns=drop, desc=f"tokenizing {task.name} {split}"
        )
        if not split.startswith("test"):
            dataset = dataset.rename_column("label", "labels")
        encoded[split] = dataset
    return datasets.DatasetDict(encoded)


def make_collator(tokenizer, args: argparse.Namespace, mixed_precision: str):
    """Pad each batch to its longest row (a multiple of 8 under mixed precision, as the accelerator runs it:
    ``accelerator.mixed_precision``, which an accelerate config can set without the flag), or stack fixed-length
    rows."""
    if args.pad_to_max_length:
        return default_data_collator
    multiple = 8 if mixed_precision in ("fp16", "bf16", "fp8") else None
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)


def make_dataloader(
    dataset: datasets.Dataset, collate_fn, batch_size: int, *, shuffle: bool = False
) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn)


@torch.no_grad()
def predict(
    accelerator: Accelerator, model: torch.nn.Module, dataloader, task: GlueTask, desc: str = "predict"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions of every row of a prepared ``dataloader``, exactly once whatever the process count,
    with a progress bar labelled ``desc`` on the main process.

    Returns ``(predictions, references)``: class ids (scores for STS-B) in dataset order, and the
    labels, or None when the split has none.
    """
    model.eval()
    predictions, references = [], []
    bar = tqdm(dataloader, desc=desc, leave=False, disable=not accelerator.is_local_main_process)
    for batch in bar:
        labels = batch.pop("labels", None)
        logits = model(**batch).logits
        batch_predictions = logits.squeeze(-1).float() if task.is_regression else logits.argmax(dim=-1)
        if labels is None:
            predictions.append(accelerator.gather_for_metrics(batch_predictions).cpu())
        else:
            batch_predictions, labels = accelerator.gather_for_metrics((batch_predictions, labels))
            predictions.append(batch_predictions.cpu())
            references.append(labels.cpu())
    stacked_references = torch.cat(references).numpy() if references else None
    return torch.cat(predictions).numpy(), stacked_references


def evaluate_splits(
    accelerator: Accelerator,
    model: torch.nn.Module,
    dataloaders: Mapping[str, object],
    task: GlueTask,
    teacher_predictions: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """The GLUE metric on each validation split (MNLI mismatched metrics get the suffix ``_mm``), and with
    ``teacher_predictions`` (split -> a teacher's predictions of it) ``teacher_agreement``: the share of
    predictions equal to the teacher's (for a regression task the Pearson correlation of the two scores)."""
    metrics = {}
    for split, dataloader in dataloaders.items():
        predictions, references = predict(accelerator, model, dataloader, task, desc=f"evaluate {split}")
        suffix = task.metric_suffix(split)
        metrics.update(
            {
                f"{key}{suffix}": value
                for key, value in glue_metric(task.name, predictions, references).items()
            }
        )
        if teacher_predictions is not None:
            theirs = teacher_predictions[split]
            metrics[f"teacher_agreement{suffix}"] = float(
                np.corrcoef(predictions, theirs)[0, 1]
                if task.is_regression
                else (predictions == theirs).mean()
            )
    return metrics


def card_fields(task: GlueTask, args: argparse.Namespace, results: Mapping[str, float]) -> dict:
    """Keyword arguments of ``hf_lln.hub.write_model_card`` for a model fine-tuned on ``task``."""
    # never a local path: the card is published, and the path means nothing on another machine
    if args.glue_dir is not None:
        source = "the GLUE TSV files"
    elif args.train_file is not None:
        source = f"local files: {Path(args.train_file).name}, {Path(args.validation_file).name}"
    else:
        source = HUB_DATASET
    summary = (
        f"Fine-tuned on GLUE {task.directory} ({source}) for {results['train_steps']} steps "
        f"({results['epochs']:.2f} epochs), batch {args.per_device_train_batch_size} per device, learning rate "
        f"{args.learning_rate:g}, max length {args.max_length}, attention {args.attn_implementation or 'default'}; "
        f"final training loss {results['train_loss']:.4f}."
    )
    is_local = Path(args.model_name_or_path).exists()
    name_parts = [Path(args.model_name_or_path).name, args.attn_implementation, task.name]
    return {
        "model_name": args.hub_model_id or "-".join(part for part in name_parts if part),
        "base_model": None if is_local else args.model_name_or_path,
        "datasets": (HUB_DATASET,),
        "eval_results": card_eval_results(task, results),
        "training_summary": summary,
    }


def card_eval_results(task: GlueTask, metrics: Mapping[str, float]) -> list[EvalResult]:
    """The model card's ``model-index`` entries: one per GLUE metric in ``metrics`` (``eval_`` prefix optional)."""
    results = []
    for key, value in metrics.items():
        name = key.removeprefix("eval_")
        metric = name.removesuffix("_mm")
        if metric not in _METRIC_NAMES:
            continue
        split = task.validation_splits[-1] if name.endswith("_mm") else task.validation_splits[0]
        results.append(
            EvalResult(
                task_type="text-classification",
                dataset_type=HUB_DATASET,
                dataset_name=f"GLUE {task.directory}",
                dataset_config=task.name,
                dataset_split=split,
                metric_type=_METRIC_TYPES.get(metric, metric),
                metric_name=_METRIC_NAMES[metric],
                metric_value=float(value),
            )
        )
    return results
