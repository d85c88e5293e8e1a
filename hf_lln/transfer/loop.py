"""``transfer_attention``: teach a linear-attention student the attention of its softmax teacher.

Stage 1, layer by layer: the teacher runs on a batch and its hidden states are kept; each student layer gets the
teacher's input hidden states for that layer and is trained to match the teacher layer's attention output (and/or
attention weights, ``hf_lln.transfer.matching``). Each layer's loss depends only on that layer's parameters and
on teacher inputs, so all layers train at once from one teacher pass, each with its own gradient clipping: the
same as training them one after the other, at the cost of one. Stage 2 (optional), end to end: the whole student
runs on its own hidden states and is trained to match the teacher's final hidden states.

Device and precision come from an ``accelerate.Accelerator`` (``mixed_precision`` "bf16"/"fp16" autocasts the
forward passes; the trained weights stay float32, every loss is computed in float32, fp16 gradients go through
the accelerator's gradient scaler). The models are moved to the accelerator's device and used as they are
(no distributed wrapper): run it on one process, or on every process with the same batches.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from accelerate import Accelerator
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm
from transformers import get_scheduler

from hf_lln.models.configuration_lln import LLN_MODEL_TYPES, lln_settings
from hf_lln.ops._checks import HALF_DTYPES
from hf_lln.transfer.distill import layers_loss
from hf_lln.transfer.graphs import GraphedSteps
from hf_lln.transfer.matching import (
    LOSSES,
    attention_options,
    hidden_loss,
    layer_loss,
    pooled_cosine,
    resolve_loss,
    stacked_weight_losses,
    student_attention,
    teacher_attention,
)
from hf_lln.transfer.params import TRAIN_MODES, attention_parameters
from hf_lln.variants import ATTENTION_VARIANTS, SOFTMAX_IMPLEMENTATIONS

# the stock families and their LLN classes
MODEL_TYPES = (*LLN_MODEL_TYPES, *LLN_MODEL_TYPES.values())
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
END_TO_END_LOSSES = ("final", "layers", "pooled")
END_TO_END_TRAIN = ("attention", "all")
POSTFIX_EVERY = 10  # steps between the progress bar's loss readings
# The teacher's hidden states kept for sequences met again (``_TeacherCache``): at most this many bytes (on a GPU, at
# most a quarter of its free memory too). MiniLM's are 10.5 KiB a token (7 states of 384 float32), WikiText-2's
# validation lines at the default lengths about 3 GiB, MRPC's training pairs about 2 GiB. A CPU step is bound by
# arithmetic, of which the teacher pass is a large part; a GPU step by the host's launches, of which it is about
# half (an H200, MiniLM, MRPC batches of 32, bf16: an LLN layer step takes 11.1 ms with the cache against 16-32 ms
# without).
TEACHER_CACHE_BYTES = 4 * 2**30
# On a GPU the teacher runs on this many batches at once (padded to the longest), ahead of their steps: one pass
# costs the host about as much as one batch's, and the host's launches bound a GPU step. On the CPU, whose arithmetic
# bounds a step, the padding would be work for nothing, so the teacher runs batch by batch there.
TEACHER_LOOKAHEAD = 8
# The teacher's SDPA backends on a GPU: all but cuDNN's, which builds a plan for every new shape, and a transfer meets
# one at nearly every teacher pass (an H200, MiniLM, bf16, 300 layer steps on MRPC: 7.15 s with it, 5.75 s without).
TEACHER_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# On the CPU a layer step is arithmetic on (batch, heads, seq, seq) matrices padded to the batch's longest input. There
# the weight losses run on this many groups of the batch's rows of similar length, each cut to its own longest, and
# are combined weighted by their real tokens: the same losses and gradients for a fraction of the padded work. A GPU
# step is bound by its launches, which this would multiply.
CPU_LENGTH_GROUPS = 4
# The ``train`` modes whose layer steps replay from CUDA graphs: those the GPU tests capture and compare with the
# eager steps; the others (their extra parametrizations) keep the eager step.
GRAPHED_TRAIN_MODES = ("qk", "lora")


@dataclass(frozen=True)
class TransferSettings:
    """How ``transfer_attention`` trains.

    ``steps``: layer-by-layer steps; ``end_to_end_steps``: end-to-end steps after them (0 skips the stage);
    ``learning_rate``: AdamW peak rate of both stages (warm-up over the first 10% of each, cosine decay to 0);
    ``train``: which parameters (``hf_lln.transfer.params.TRAIN_MODES``); ``lora_rank``: rank of ``train="lora"``;
    ``loss``: layer loss, ``"weights"`` (KL of the attention rows), ``"output"`` (relative squared error of the
    attention output), ``"both"``, or ``"auto"``: weights where the variant has one attention distribution per
    row, else output (``hf_lln.transfer.matching.resolve_loss``; the report holds the one used);
    ``end_to_end_loss``: what the end-to-end stage matches (``END_TO_END_LOSSES``): ``"final"`` the final hidden
    states, ``"layers"`` every layer's output (the student on its own hidden states throughout), ``"pooled"`` the
    final hidden states plus ``1 - cosine`` of their mean-pooled sentence embeddings; ``end_to_end_train``:
    ``"attention"`` (the ``train`` parameters) or ``"all"`` (every encoder-layer parameter);
    ``end_to_end_learning_rate``: that stage's peak rate (None: ``learning_rate``);
    ``max_grad_norm``: per-layer clipping (0 disables); ``eval_batches``: the first N batches, on which the
    losses before and after are measured (they are trained on too, as the stream cycles); ``query_fraction``: the
    share of each batch's query positions, drawn anew at each layer-by-layer step, whose attention rows the weight
    loss compares (each row is a distribution on its own; the share cuts the O(seq²) work, which bounds a CPU step,
    and fits less per step, as fewer steps do; the output loss and the measurements use every row); ``seed``: LoRA
    init, the order of a text source's batches and the query draws; ``batch_size``, ``max_length``,
    ``mixed_lengths``: texts per batch, tokens per text, and whether every other batch holds twice the texts at
    half the length, where the batches are cut from a text source (``text_batches``, ``hf-lln convert --transfer``); batches handed over ready (a GLUE
    run's) are used as they are.

    Every default of attention transfer is here (``hf_lln.recipes.glue.teacher.DEFAULTS`` adds the fine-tuned
    conversion's own), from the studies in docs/quality.md (arm ``default-x2``: the settings of arm
    ``qk-weights-e2elayersall-mixed-lr3e-3`` at twice its steps): on the real MiniLM they lift the mean embedding
    cosine to softmax's on SST-2 sentences from 0.50 to 0.956 (LLN) and from 0.86 to 0.981 (LLN+Diag), and on
    512-token WikiText paragraphs from 0.31 to 0.943 and from 0.65 to 0.972. Half the steps give 0.950 and 0.979 in
    half the time (the CPU's choice: about 22 minutes for MiniLM on 2 cores instead of about 40).
    """

    steps: int = 1200
    end_to_end_steps: int = 400
    learning_rate: float = 3e-3
    train: str = "qk"
    lora_rank: int = 8
    loss: str = "auto"
    end_to_end_loss: str = "layers"
    end_to_end_train: str = "all"
    end_to_end_learning_rate: float | None = 1e-4
    max_grad_norm: float = 1.0
    eval_batches: int = 4
    query_fraction: float = 1.0
    seed: int = 0
    batch_size: int = 32
    max_length: int = 128
    mixed_lengths: bool = True

    def __post_init__(self):
        for name in (
            "steps",
            "end_to_end_steps",
            "eval_batches",
            "lora_rank",
            "seed",
            "batch_size",
            "max_length",
        ):
            value = getattr(self, name)
            minimum = 0 if name in ("steps", "end_to_end_steps", "seed") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.steps + self.end_to_end_steps == 0:
            raise ValueError("steps and end_to_end_steps are both 0: there is nothing to train")
        for name in ("learning_rate", "end_to_end_learning_rate"):
            value = getattr(self, name)
            if value is None and name == "end_to_end_learning_rate":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if not isinstance(self.mixed_lengths, bool):
            raise ValueError(f"mixed_lengths must be True or False, got {self.mixed_lengths!r}")
        if self.mixed_lengths and self.max_length < 2:
            raise ValueError(
                f"mixed_lengths halves max_length, which must then be >= 2, got {self.max_length}"
            )
        if (
            isinstance(self.query_fraction, bool)
            or not isinstance(self.query_fraction, (int, float))
            or not 0 < self.query_fraction <= 1
        ):
            raise ValueError(f"query_fraction must be a number in (0, 1], got {self.query_fraction!r}")
        if not isinstance(self.max_grad_norm, (int, float)) or self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be a number >= 0, got {self.max_grad_norm!r}")
        if self.train not in TRAIN_MODES:
            raise ValueError(f"train must be one of {', '.join(map(repr, TRAIN_MODES))}; got {self.train!r}")
        for name, choices in (
            ("loss", LOSSES),
            ("end_to_end_loss", END_TO_END_LOSSES),
            ("end_to_end_train", END_TO_END_TRAIN),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name} must be one of {', '.join(map(repr, choices))}; got {getattr(self, name)!r}"
                )


@dataclass
class TransferReport:
    """What ``transfer_attention`` did. ``layer_before/after[i]``: layer ``i``'s loss on the evaluation batches;
    ``hidden_before/after``: relative squared error of the final hidden states; ``cosine_before/after``: mean
    cosine of the mean-pooled final hidden states to the teacher's; ``runtime``: seconds of training and
    measuring."""

    settings: TransferSettings
    layer_before: list[float]
    layer_after: list[float]
    hidden_before: float
    hidden_after: float
    cosine_before: float
    cosine_after: float
    source: str = ""
    runtime: float = 0.0

    def table(self) -> str:
        """Markdown: one row per layer and one for the final hidden states, loss before and after."""
        loss = {"output": "attention output error", "weights": "attention KL", "both": "output error + KL"}
        rows = [f"| layer | {loss[self.settings.loss]} before | after |", "|---|---:|---:|"]
        rows += [
            f"| {index} | {before:.4f} | {after:.4f} |"
            for index, (before, after) in enumerate(zip(self.layer_before, self.layer_after, strict=True))
        ]
        rows.append(f"| final hidden states, error | {self.hidden_before:.4f} | {self.hidden_after:.4f} |")
        rows.append(f"| pooled embedding cosine | {self.cosine_before:.4f} | {self.cosine_after:.4f} |")
        return "\n".join(rows)

    def summary(self) -> str:
        """A paragraph and the table, for a model card."""
        s = self.settings
        trained = f"`{s.train}`" + (f" (rank {s.lora_rank})" if s.train == "lora" else "")
        stages = []
        queries = (
            f", on a random {s.query_fraction:.0%} of the query rows each step"
            if s.query_fraction < 1 and s.loss != "output"
            else ""
        )
        if s.steps:
            stages.append(
                f"{s.steps} layer-by-layer steps (loss: {s.loss}{queries}) training the attention parameters "
                f"{trained} with learning rate {s.learning_rate:g}"
            )
        if s.end_to_end_steps:
            matched = {"final": "final hidden states", "layers": "every layer's hidden states"}.get(
                s.end_to_end_loss, "final hidden states and pooled embeddings"
            )
            params = trained if s.end_to_end_train == "attention" else "every encoder-layer parameter"
            stages.append(
                f"{s.end_to_end_steps} end-to-end steps on the {matched}, training {params} with learning rate "
                f"{s.end_to_end_learning_rate or s.learning_rate:g}"
            )
        return (
            f"Attention transferred from the softmax model: {', then '.join(stages)}; on "
            f"{self.source or 'the given batches'}, in {self.runtime:.1f} s. Measured on the first {s.eval_batches} "
            f"batches, before and after:\n\n{self.table()}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "settings": asdict(self.settings)}


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder layers of a BERT/RoBERTa model, bare or with a head."""
    return model.base_model.encoder.layer


def check_models(teacher: torch.nn.Module, student: torch.nn.Module, loss: str = "auto") -> str:
    """``ValueError`` naming what is wrong unless ``teacher`` runs softmax attention, ``student`` an hf_lln
    variant, both are BERT/RoBERTa with the same encoder shape, and the student supports ``loss``; returns the
    layer loss to use (``hf_lln.transfer.matching.resolve_loss``)."""
    for name, model in (("teacher", teacher), ("student", student)):
        if model.config.model_type not in MODEL_TYPES:
            raise ValueError(
                f"{name} must be a BERT or RoBERTa model (model_type one of {', '.join(MODEL_TYPES)}), got "
                f"{model.config.model_type!r}"
            )
    teacher_attention_name = teacher.config._attn_implementation
    if teacher_attention_name not in SOFTMAX_IMPLEMENTATIONS:
        raise ValueError(
            f"teacher must run softmax attention (attn_implementation one of {', '.join(SOFTMAX_IMPLEMENTATIONS)}), "
            f"got {teacher_attention_name!r}"
        )
    student_attention_name = student.config._attn_implementation
    if student_attention_name not in ATTENTION_VARIANTS:
        raise ValueError(
            f"student attn_implementation must be an hf_lln variant ({', '.join(ATTENTION_VARIANTS)}), got "
            f"{student_attention_name!r}: transfer teaches a linear attention the teacher's softmax"
        )
    half = sorted({str(param.dtype) for param in student.parameters() if param.dtype in HALF_DTYPES})
    if half:
        raise ValueError(
            f"student parameters must be float32 to train (AdamW steps underflow in half precision), got "
            f"{', '.join(half)}: load it with dtype=torch.float32 (or call .float()) and compute in half precision "
            "through the accelerator's mixed_precision"
        )
    shape = ("num_hidden_layers", "hidden_size", "num_attention_heads")
    if [getattr(teacher.config, n) for n in shape] != [getattr(student.config, n) for n in shape]:
        raise ValueError(
            "teacher and student must have the same encoder ("
            + ", ".join(f"{n} {getattr(teacher.config, n)} vs {getattr(student.config, n)}" for n in shape)
            + ")"
        )
    return resolve_loss(loss, student_attention_name, lln_settings(student.config)["lln_mix_mode"])


def _model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if "attention_mask" not in batch:
        raise ValueError(f"batches must hold attention_mask (batch, seq), got keys {sorted(batch)}")
    return {key: _to_device(value, device) for key, value in batch.items() if key in MODEL_INPUTS}


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; from the CPU to a GPU through pinned memory, without waiting: a copy from pageable
    memory first waits for the GPU's queue to drain, and the host must run ahead of a GPU transfer step."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _cycle(batches: Iterable) -> Iterable:
    """``batches`` again and again (a shuffling DataLoader reshuffles on each pass)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("batches is empty: transfer needs at least one batch")


@dataclass(frozen=True)
class Stage:
    """One training stage of a transfer: ``parameters()`` a context manager giving the parameter groups it trains
    (each clipped on its own; ``requires_grad`` restored on leaving), ``losses(inputs)`` one loss per group;
    ``graph_losses(mask, hidden_states)``, where set, the same losses from the teacher's hidden states, replayable
    from a CUDA graph (``hf_lln.transfer.graphs``)."""

    name: str
    steps: int
    learning_rate: float
    description: str
    parameters: Callable[[], contextlib.AbstractContextManager[list[list[torch.Tensor]]]]
    losses: Callable[[dict[str, torch.Tensor]], list[torch.Tensor]]
    graph_losses: Callable[[torch.Tensor, Sequence[torch.Tensor]], list[torch.Tensor]] | None = None


def _same_options(first: Mapping, second: Mapping) -> bool:
    """Whether two attention option dicts are equal (tensor values, such as random features, by value)."""

    def same(a, b) -> bool:
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
        return a == b

    return first.keys() == second.keys() and all(same(first[key], second[key]) for key in first)


class _Inputs(dict):
    """Model inputs on the device (``**inputs`` passes only these), with ``cache_keys``: the teacher cache's keys
    and mask, taken from the batch while it is still on the CPU (on a GPU, reading them back would wait for it)."""

    cache_keys: tuple[list[bytes], torch.Tensor] | None = None


class _TeacherCache:
    """The teacher's hidden states of every sequence it has run on, so that a sequence met again costs no teacher
    pass: a transfer goes over its text many times (1,200 steps of 32 texts over WikiText-2's 2,461 validation
    lines), and the teacher pass is a large part of a CPU step (without it a MiniLM layer step takes 26% less).
    The teacher runs on the rows of a batch that are not held, so each text costs one teacher pass per length.

    Per sequence ``(layers + 1, tokens, hidden)`` at its real tokens, keyed by their ids, token types and positions
    (BERT's positions count the padding on the left), until the next one would take more than ``max_bytes`` (0:
    nothing is kept). A batch comes from the cache when all its rows do; its padding positions are then zeros,
    which nothing reads (padding is masked out of the attention and every loss)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes, self.rows, self.full = max_bytes, 0, {}, max_bytes == 0

    @property
    def in_use(self) -> bool:
        """Whether it holds rows or may still take some (else batches need no keys)."""
        return bool(self.rows) or not self.full

    @staticmethod
    def real_positions(mask: torch.Tensor, device) -> torch.Tensor:
        """The flat indices of ``mask``'s real tokens, row after row, on ``device``."""
        return _to_device(mask.flatten().nonzero().squeeze(1), torch.device(device))

    @staticmethod
    def keys(inputs: Mapping[str, torch.Tensor]) -> tuple[list[bytes], torch.Tensor]:
        """Each row's key and the batch's mask ``(batch, seq)``, on the CPU."""
        mask = inputs["attention_mask"].cpu().bool()
        columns = [inputs[name].cpu() for name in MODEL_INPUTS if name in inputs and name != "attention_mask"]
        # one array (columns, batch, seq), then one numpy index per row: a few µs a row, where torch indexing of
        # each column costs tens (on a GPU the host's time bounds a step)
        values = torch.stack([*columns, torch.arange(mask.shape[1]).expand_as(mask)]).to(torch.int64).numpy()
        real = mask.numpy()
        return [values[:, row, real[row]].tobytes() for row in range(mask.shape[0])], mask

    def get(self, keys: list[bytes], mask: torch.Tensor, device) -> tuple[torch.Tensor, ...] | None:
        """The hidden states of a batch whose rows are all held, else None."""
        if any(key not in self.rows for key in keys):
            return None
        # the rows' real tokens in batch order: the order of the mask's True entries, flattened
        real = torch.cat([self.rows[key] for key in keys], dim=1)
        full = real.new_zeros(real.shape[0], mask.numel(), real.shape[2])
        full.index_copy_(1, self.real_positions(mask, device), real)
        return full.view(real.shape[0], *mask.shape, real.shape[2]).unbind(0)

    def put(self, keys: list[bytes], mask: torch.Tensor, hidden_states: tuple[torch.Tensor, ...]) -> None:
        """Keep the new rows of a batch the teacher ran on, ``hidden_states``: ``layers + 1`` of ``(batch, seq,
        hidden)``."""
        new = [row for row, key in enumerate(keys) if key not in self.rows]
        if self.full or not new:
            return
        # one gather of every real token (a few launches on a GPU, not one per row), then a view per row
        flat = self.real_positions(mask, hidden_states[0].device)
        real = torch.stack(hidden_states).flatten(1, 2).index_select(1, flat)
        rows = real.split(mask.sum(1).tolist(), dim=1)
        for row in new:
            if keys[row] in self.rows:  # the same text twice in the batch
                continue
            # a view would keep the rows already held alive a second time
            kept = rows[row] if len(new) == len(keys) else rows[row].clone()
            size = kept.numel() * kept.element_size()
            if self.bytes + size > self.max_bytes:
                self.full = True
                return
            self.rows[keys[row]] = kept
            self.bytes += size


class TransferRun:
    """The models, the accelerator and the per-batch computations of one transfer: what ``transfer_attention``
    drives, public for harnesses that time or profile its steps (``hf_lln.experiments.transfer_throughput``)."""

    # whether ``graphable`` layer steps replay from CUDA graphs (the tests turn them off to compare)
    cuda_graphs = True

    def __init__(
        self,
        teacher,
        student,
        settings: TransferSettings,
        accelerator: Accelerator,
        teacher_cache_bytes: int | None = None,
    ):
        self.teacher, self.student, self.settings, self.accelerator = teacher, student, settings, accelerator
        if teacher_cache_bytes is None:
            teacher_cache_bytes = TEACHER_CACHE_BYTES
        if accelerator.device.type == "cuda":  # a quarter of the free memory at most
            teacher_cache_bytes = min(
                teacher_cache_bytes, torch.cuda.mem_get_info(accelerator.device)[0] // 4
            )
        self.teacher_cache = _TeacherCache(teacher_cache_bytes)
        # Stacking saves kernel launches, which bound a GPU step; on the CPU, whose arithmetic bounds a step, it only
        # makes every temporary six times larger (MiniLM on 2 cores: 2.4 s a layer step one by one, 5.6 s stacked).
        self.groups = self.layer_groups(stack=accelerator.device.type == "cuda")
        self.length_groups = CPU_LENGTH_GROUPS if self.rows_are_independent() else 1

    def rows_are_independent(self) -> bool:
        """Whether the weight losses may run on groups of a batch's rows (``CPU_LENGTH_GROUPS``): on the CPU, for the
        weight loss of LLN and LLN+Diag students with per-sequence statistics, whose attention rows depend on their
        own sequence alone (``stats="global"`` pools the batch; other variants are not checked for it)."""
        if self.accelerator.device.type != "cpu" or self.settings.loss != "weights":
            return False
        return all(
            layer.attention.self.config._attn_implementation in ("lln", "lln_diag")
            and attention_options(layer.attention.self)["stats"] == "per_sequence"
            for layer in encoder_layers(self.student)
        )

    @classmethod
    def prepared(
        cls,
        teacher,
        student,
        settings: TransferSettings,
        accelerator: Accelerator | None,
        teacher_cache_bytes: int | None = None,
    ) -> TransferRun:
        """A run of ``settings`` (its ``loss`` resolved by ``check_models``, which refuses bad models before any
        work) with both models on the device of ``accelerator`` (default: a new ``Accelerator()``), in eval mode
        (dropout off: the student fits a deterministic function of the teacher, frozen for good) and without
        gradients: each stage turns on its own parameters' (any other, the embeddings say, would pile up a .grad
        that no optimizer here clears, and that the user's next training step would add to its own)."""
        settings = replace(settings, loss=check_models(teacher, student, settings.loss))
        accelerator = accelerator or Accelerator()
        if teacher_cache_bytes is not None and (
            isinstance(teacher_cache_bytes, bool)
            or not isinstance(teacher_cache_bytes, int)
            or teacher_cache_bytes < 0
        ):
            raise ValueError(
                f"teacher_cache_bytes must be an integer >= 0 or None, got {teacher_cache_bytes!r}"
            )
        for model in (teacher, student):
            model.to(accelerator.device).eval().requires_grad_(False)
        return cls(teacher, student, settings, accelerator, teacher_cache_bytes)

    def stream(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        """The model inputs of ``batches`` on the device, cycled for ever (with their teacher-cache keys); on a GPU
        with the cache in use, ``TEACHER_LOOKAHEAD`` at a time, their new rows' teacher states cached at once."""
        stream = (self.inputs(batch) for batch in _cycle(batches))
        if self.accelerator.device.type != "cuda" or not self.teacher_cache.in_use:
            yield from stream
            return
        while True:
            ahead = list(itertools.islice(stream, TEACHER_LOOKAHEAD))
            self.cache_teacher(ahead)
            yield from ahead

    def inputs(self, batch: Mapping[str, torch.Tensor]) -> _Inputs:
        """The model inputs of ``batch`` on the device, with their teacher-cache keys while the cache is in use."""
        inputs = _Inputs(_model_inputs(batch, self.accelerator.device))
        if self.teacher_cache.in_use:
            inputs.cache_keys = self.teacher_cache.keys(batch)
        return inputs

    def cache_teacher(self, batches: list[_Inputs]) -> None:
        """One teacher pass over the rows of ``batches`` that the cache does not hold (each once), right-padded to
        the longest; their states go to the cache. Right padding leaves the real tokens' positions, hence their
        states, as they are."""
        cache, rows, seen = self.teacher_cache, [], set()
        if cache.full:
            return
        for index, inputs in enumerate(batches):
            keys, _ = inputs.cache_keys
            for row, key in enumerate(keys):
                if key not in cache.rows and key not in seen:
                    seen.add(key)
                    rows.append((index, row))
        if not rows:
            return
        length = max(inputs["attention_mask"].shape[1] for inputs in batches)
        offsets = list(itertools.accumulate((len(inputs.cache_keys[0]) for inputs in batches), initial=0))
        flat = [offsets[index] + row for index, row in rows]

        def gathered(tensors: list[torch.Tensor]) -> torch.Tensor:
            """The new rows of ``tensors`` (one per batch, ``(batch, seq)``), right-padded with zeros."""
            padded = torch.cat([torch.nn.functional.pad(t, (0, length - t.shape[1])) for t in tensors])
            return padded.index_select(0, _to_device(torch.tensor(flat), padded.device))

        joined = {
            name: gathered([inputs[name] for inputs in batches])
            for name in MODEL_INPUTS
            if name in batches[0]
        }
        # put() reads the mask on the host: the CPU copy, not the device's (reading that would wait for the GPU)
        mask = gathered([inputs.cache_keys[1] for inputs in batches])
        keys = [batches[index].cache_keys[0][row] for index, row in rows]
        cache.put(keys, mask, self.teacher_forward(joined))

    def stages(self) -> list[Stage]:
        """The layer-by-layer stage, then the end-to-end stage, as ``settings`` sets them (a stage of 0 steps is
        skipped by ``transfer_attention``)."""
        settings, layers = self.settings, list(encoder_layers(self.student))

        @contextlib.contextmanager
        def end_to_end_groups():
            with end_to_end_parameters(layers, settings) as params:
                yield [params]

        return [
            Stage(
                "layer",
                settings.steps,
                settings.learning_rate,
                "attention transfer (loss per layer)",
                lambda: attention_parameters(layers, settings.train, settings.lora_rank),
                lambda inputs: self.layer_losses(
                    inputs, self.teacher_pass(inputs), self.sample_queries(inputs)
                ),
                self.graph_layer_losses if self.graphable() else None,
            ),
            Stage(
                "end_to_end",
                settings.end_to_end_steps,
                settings.end_to_end_learning_rate or settings.learning_rate,
                f"end-to-end transfer ({settings.end_to_end_loss})",
                end_to_end_groups,
                lambda inputs: [self.end_to_end_loss(inputs)],
            ),
        ]

    def graphable(self) -> bool:
        """Whether the layer steps replay from CUDA graphs: on a GPU, for LLN and LLN+Diag (whose weight loss,
        ``hf_lln.transfer.weight_kl``, runs on the device alone; other variants' options may hold CPU tensors),
        training ``GRAPHED_TRAIN_MODES``, with the stacked weight loss over every query row (a query draw is random,
        which a replay would repeat) and no fp16 gradient scaler (whose step reads back whether the gradients are
        finite)."""
        return (
            self.cuda_graphs
            and self.accelerator.device.type == "cuda"
            and self.settings.loss == "weights"
            and self.student.config._attn_implementation in ("lln", "lln_diag")
            and self.settings.train in GRAPHED_TRAIN_MODES
            and self.settings.query_fraction == 1
            and self.accelerator.scaler is None
        )

    def graph_layer_losses(
        self, mask: torch.Tensor, hidden_states: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """``layer_losses`` of every query row from the layers' input ``hidden_states`` and ``mask: (batch,
        seq)``."""
        return self.layer_losses({"attention_mask": mask}, hidden_states)

    def teacher_pass(self, inputs):
        """The teacher's ``layers + 1`` hidden states ``(batch, seq, hidden)``, without gradient: the embeddings'
        output (layer 0's input), then each layer's output (the next one's input; the last is the final state).
        The teacher runs only on the rows the cache does not hold (padding positions of cached batches are zero)."""
        cache = self.teacher_cache
        if not cache.in_use:
            return self.teacher_forward(inputs)
        keys, mask = getattr(inputs, "cache_keys", None) or cache.keys(inputs)
        missing = [row for row, key in enumerate(keys) if key not in cache.rows]
        if len(missing) == len(keys):  # a new batch: the teacher's own states, kept for next time
            hidden_states = self.teacher_forward(inputs)
            cache.put(keys, mask, hidden_states)
            return hidden_states
        if missing and not cache.full:  # the same columns: BERT's positions count left padding
            index = torch.tensor(missing, device=self.accelerator.device)
            rows = {name: value.index_select(0, index) for name, value in inputs.items()}
            cache.put([keys[row] for row in missing], mask[missing], self.teacher_forward(rows))
        cached = cache.get(keys, mask, self.accelerator.device)
        return cached if cached is not None else self.teacher_forward(inputs)

    def teacher_forward(self, inputs) -> tuple[torch.Tensor, ...]:
        """The teacher run on ``inputs``: ``teacher_pass`` without the cache."""
        backends = (
            sdpa_kernel(TEACHER_SDPA_BACKENDS)
            if self.accelerator.device.type == "cuda"
            else contextlib.nullcontext()
        )
        with torch.no_grad(), self.accelerator.autocast(), backends:
            return self.teacher.base_model(**inputs, output_hidden_states=True).hidden_states

    def layer_groups(self, stack: bool) -> list[list[int]]:
        """Runs of consecutive layers whose weight losses are computed stacked (``stacked_weight_losses``): with
        ``stack``, the student layers sharing one set of attention options; else, and for the other losses, one
        layer per group."""
        layers = encoder_layers(self.student)
        if not stack or self.settings.loss != "weights":
            return [[index] for index in range(len(layers))]
        groups: list[list[int]] = []
        for index, layer in enumerate(layers):
            options = attention_options(layer.attention.self)
            if groups and _same_options(options, attention_options(layers[groups[-1][0]].attention.self)):
                groups[-1].append(index)
            else:
                groups.append([index])
        return groups

    def sample_queries(self, inputs) -> torch.Tensor | None:
        """The query positions ``(count,)`` a layer step's weight loss compares: ``settings.query_fraction`` of the
        batch's (at least one), drawn without replacement; None for all of them."""
        seq = inputs["attention_mask"].shape[1]
        count = max(1, math.ceil(self.settings.query_fraction * seq))
        if count == seq or self.settings.loss == "output":
            return None
        return torch.randperm(seq, device=self.accelerator.device)[:count]

    def layer_losses(self, inputs, hidden_states, queries=None) -> list[torch.Tensor]:
        """One scalar loss per student layer, each layer fed the teacher's input ``hidden_states[i]``; ``inputs``
        the batch's model inputs ``(batch, seq)``; the weight loss over the rows of the query positions ``queries:
        (count,)`` (None: all)."""
        mask = inputs["attention_mask"].bool()
        if self.settings.loss == "weights":
            if queries is None and self.length_groups > 1:
                return self.grouped_weight_losses(hidden_states, mask)
            return self.weight_losses(hidden_states, mask, queries)
        teacher_layers, student_layers = encoder_layers(self.teacher), encoder_layers(self.student)
        losses = []
        for index, (teacher_layer, student_layer) in enumerate(
            zip(teacher_layers, student_layers, strict=True)
        ):
            hidden = hidden_states[index]
            with self.accelerator.autocast():
                with torch.no_grad():
                    target = teacher_attention(teacher_layer, hidden, mask, self.settings.loss, queries)
                prediction = student_attention(student_layer, hidden, mask, self.settings.loss, queries)
            losses.append(layer_loss(self.settings.loss, prediction, target, mask, queries))
        return losses

    def weight_losses(self, hidden_states, mask: torch.Tensor, queries=None) -> list[torch.Tensor]:
        """``layer_losses``' weight losses, the layers of each of ``self.groups`` stacked."""
        teacher_layers, student_layers = encoder_layers(self.teacher), encoder_layers(self.student)
        losses = []
        for group in self.groups:
            hidden = torch.stack([hidden_states[index] for index in group])
            with self.accelerator.autocast():
                stacked = stacked_weight_losses(
                    [teacher_layers[index] for index in group],
                    [student_layers[index] for index in group],
                    hidden,
                    mask,
                    queries,
                )
            losses += stacked.unbind()
        return losses

    def grouped_weight_losses(self, hidden_states, mask: torch.Tensor) -> list[torch.Tensor]:
        """``weight_losses`` over every query row, computed on ``self.length_groups`` groups of the batch's rows of
        similar length, each cut after its last real token (right padding only is cut: BERT's positions count any
        left padding), and combined weighted by each group's share of the real tokens: each loss is a mean over
        real query rows, and rows depend on their own sequence alone (``rows_are_independent``)."""
        seq = mask.shape[1]
        # a row's width: up to its last real token (0 for a row without one)
        width = torch.where(mask.any(1), seq - mask.flip(1).to(torch.uint8).argmax(1), 0)
        order = torch.argsort(width, descending=True, stable=True)
        total = mask.sum().clamp_min(1)
        losses = None
        for rows in order.split(math.ceil(len(order) / self.length_groups)):
            cut = max(1, int(width[rows].max()))
            part_mask = mask[rows, :cut]
            part = self.weight_losses([h[rows, :cut] for h in hidden_states], part_mask)
            share = part_mask.sum() / total
            weighted = [loss * share for loss in part]
            losses = weighted if losses is None else [a + b for a, b in zip(losses, weighted, strict=True)]
        return losses

    def student_hidden(self, inputs) -> torch.Tensor:
        """The student's final hidden state ``(batch, seq, hidden)`` on its own hidden states."""
        with self.accelerator.autocast():
            return self.student.base_model(**inputs).last_hidden_state

    def end_to_end_loss(self, inputs) -> torch.Tensor:
        """The ``settings.end_to_end_loss`` of the student, run on its own hidden states, against the teacher."""
        target = self.teacher_pass(inputs)
        mask = inputs["attention_mask"].bool()
        kind = self.settings.end_to_end_loss
        with self.accelerator.autocast():
            output = self.student.base_model(**inputs, output_hidden_states=kind == "layers")
        if kind == "layers":
            return layers_loss(output.hidden_states, target, mask)
        loss = hidden_loss(output.last_hidden_state, target[-1], mask)
        if kind == "pooled":
            loss = loss + 1 - pooled_cosine(output.last_hidden_state, target[-1], mask)
        return loss

    @torch.no_grad()
    def evaluate(self, batches) -> tuple[list[float], float, float]:
        """Mean per-layer losses, final hidden-state error and pooled cosine over ``batches``."""
        layers, hidden, cosine = None, 0.0, 0.0
        for inputs in batches:
            hidden_states = self.teacher_pass(inputs)
            losses = torch.stack(self.layer_losses(inputs, hidden_states))
            layers = losses if layers is None else layers + losses
            student_last, mask = self.student_hidden(inputs), inputs["attention_mask"].bool()
            hidden += hidden_loss(student_last, hidden_states[-1], mask).item()
            cosine += pooled_cosine(student_last, hidden_states[-1], mask).item()
        count = len(batches)
        return (layers / count).tolist(), hidden / count, cosine / count

    def optimise(self, params: list[list[torch.Tensor]], stage: Stage, stream, steps: int | None = None):
        """``steps`` (default ``stage.steps``) AdamW steps of ``stage.losses`` (one loss per entry of ``params``,
        each group clipped on its own), through CUDA graphs where the stage has ``graph_losses``; a tqdm bar shows
        each group's loss."""
        steps = stage.steps if steps is None else steps
        cuda = self.accelerator.device.type == "cuda"
        # fused: one kernel for every tensor of a step; the foreach version launches a dozen per group
        optimizer = torch.optim.AdamW(
            [{"params": group} for group in params],
            lr=stage.learning_rate,
            weight_decay=0.0,
            fused=cuda,
            capturable=cuda,
        )
        scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=steps // 10, num_training_steps=steps)
        max_norm = self.settings.max_grad_norm
        graphs = None
        if stage.graph_losses is not None:
            clip = (lambda: clip_each_group(params, max_norm)) if max_norm > 0 else None
            graphs = GraphedSteps(stage.graph_losses, optimizer, clip, len(encoder_layers(self.student)))
        bar = tqdm(range(steps), desc=stage.description, disable=not self.accelerator.is_local_main_process)
        try:
            for step in bar:
                inputs = next(stream)
                # the first step allocates AdamW's state, which must not happen inside a graph
                if graphs is not None and step > 0:
                    losses = graphs.step(inputs["attention_mask"], self.teacher_pass(inputs))
                else:
                    losses = self.eager_step(stage.losses(inputs), params, optimizer)
                scheduler.step()
                if step % POSTFIX_EVERY == 0 or step == steps - 1:  # reading a loss waits for the GPU
                    values = torch.stack(losses).tolist()
                    bar.set_postfix_str(" ".join(f"{i}:{value:.4f}" for i, value in enumerate(values)))
        finally:
            if graphs is not None:
                graphs.close()

    def eager_step(
        self, losses: list[torch.Tensor], params: list[list[torch.Tensor]], optimizer
    ) -> list[torch.Tensor]:
        """Backward of ``losses`` (one per group of ``params``), clipping and ``optimizer``'s step; returns the losses
        detached: a step's autograd graph must not outlive it (a later CUDA graph capture would find its
        gradient accumulators bound to the default stream)."""
        scaler, max_norm = self.accelerator.scaler, self.settings.max_grad_norm
        total = torch.stack(losses).sum()
        (scaler.scale(total) if scaler is not None else total).backward()
        if scaler is not None:
            scaler.unscale_(optimizer)
        if max_norm > 0:
            clip_each_group(params, max_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return [loss.detach() for loss in losses]


@torch.no_grad()
def clip_each_group(groups: list[list[torch.Tensor]], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_(group, max_norm)`` for each of ``groups`` (a list of parameter lists), the
    norms of all of them in one set of kernels and one scaling per group (``clip_grad_norm_`` launches about six
    kernels a group, and a GPU step is bound by the host's launches). Reads nothing back to the host and copies
    nothing to the device: a CUDA graph can hold it (``hf_lln.transfer.graphs``)."""
    grads = [[param.grad for param in group if param.grad is not None] for group in groups]
    flat = [grad for group in grads for grad in group]
    if not flat:
        return
    norms = torch.stack(torch._foreach_norm(flat)).split([len(group) for group in grads])
    group_norms = torch.stack([part.norm() for part in norms])
    for group, scale in zip(grads, (max_norm / (group_norms + 1e-6)).clamp(max=1.0).unbind(), strict=True):
        if group:
            torch._foreach_mul_(group, scale)


@contextlib.contextmanager
def end_to_end_parameters(layers: list[torch.nn.Module], settings: TransferSettings) -> Iterator[list]:
    """The parameters the end-to-end stage trains (one flat list), ``requires_grad`` restored on leaving."""
    if settings.end_to_end_train == "attention":
        with attention_parameters(layers, settings.train, settings.lora_rank) as params:
            yield [param for group in params for param in group]
        return
    params = [param for layer in layers for param in layer.parameters()]
    flags = [param.requires_grad for param in params]
    try:
        for param in params:
            param.requires_grad_(True)
        yield params
    finally:
        for param, flag in zip(params, flags, strict=True):
            param.requires_grad_(flag)


def transfer_attention(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    settings: TransferSettings | None = None,
    *,
    accelerator: Accelerator | None = None,
    source: str = "",
    teacher_cache_bytes: int | None = None,
) -> TransferReport:
    """Train ``student``'s attention to reproduce ``teacher``'s, in place; returns the ``TransferReport`` (also
    printed as a table).

    ``teacher``: a softmax BERT/RoBERTa (bare or with a head; only its encoder is used); ``student``: the same
    architecture running an hf_lln variant, normally the teacher's weights. ``batches``: a re-iterable of
    ``{input_ids, attention_mask[, token_type_ids]}: (batch, seq)`` (other keys, e.g. labels, are ignored), cycled
    as long as needed; its first ``settings.eval_batches`` batches are the evaluation set. ``accelerator``:
    device and precision (default: a new ``Accelerator()``); ``source``: a description of the text, for the
    report; ``teacher_cache_bytes``: memory for the teacher's hidden states of the sequences seen, so that each
    later pass over them skips the teacher (None: ``TEACHER_CACHE_BYTES``; on a GPU at most a quarter of its free
    memory; 0: none). Padding (``attention_mask == 0``) is excluded from the attention and from every loss.
    """
    teacher_was_training, student_was_training = teacher.training, student.training
    student_requires_grad = {param: param.requires_grad for param in student.parameters()}
    start = time.perf_counter()
    run = TransferRun.prepared(
        teacher, student, settings or TransferSettings(), accelerator, teacher_cache_bytes
    )
    settings, accelerator = run.settings, run.accelerator
    try:
        stream = run.stream(batches)
        held = list(itertools.islice(stream, settings.eval_batches))
        torch.manual_seed(settings.seed)
        before = run.evaluate(held)
        for stage in run.stages():
            if stage.steps:
                with stage.parameters() as groups:
                    run.optimise(groups, stage, stream)
        after = run.evaluate(held)
    finally:
        teacher.train(teacher_was_training)
        student.train(student_was_training)
        for param, requires_grad in student_requires_grad.items():
            param.requires_grad_(requires_grad)
    report = TransferReport(
        settings,
        before[0],
        after[0],
        before[1],
        after[1],
        before[2],
        after[2],
        source,
        runtime=time.perf_counter() - start,
    )
    if accelerator.is_local_main_process:
        print(report.table())
    return report
