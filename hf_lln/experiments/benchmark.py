"""Timing and memory harness (``hf-lln bench``): attention ops, whole encoders, and the encode/lookup path.

Methodology, the same for every row so rows compare:

- **Fixed tokens per call.** Each call processes ``tokens`` tokens: ``batch = max(1, tokens // seq_len)``, so a
  linear-time variant shows a flat time curve and a quadratic one a slope of one on the log-log plots.
- **Warm-up, then the median of many repeats.** ``warmup`` untimed calls (kernel selection, autotuning,
  allocator growth), then at least ``min_repeats`` and at most ``max_repeats`` timed calls, as many as fit in
  ``time_budget`` seconds. GPU calls are timed with CUDA events on the device; CPU calls with
  ``time.perf_counter``.
- **Peak memory** is the extra memory one call needs above what is already resident (inputs, weights): on GPU
  ``torch.cuda.max_memory_allocated`` minus the allocation before the call; on CPU the peak of live tensor bytes
  at operator boundaries, tracked by a dispatch mode (:class:`LiveTensorBytes`; buffers internal to one kernel
  are not seen).
- **Memory-bandwidth floor.** Each run first measures the device-to-device copy bandwidth (a large
  ``Tensor.copy_``, read + write). Each row states the bytes the call must move at the least and
  ``floor_ms = bytes / bandwidth``; ``floor_fraction = floor_ms / median_ms`` is how close the row is to that
  limit (1 = at the limit).
  Ops: forward reads q, k, v and writes the output; forward+backward also reads q, k, v, the output and its
  gradient and writes the three input gradients. Models: every weight is read once (forward), or read twice and
  its gradient written once (forward+backward), plus each layer's attention-op traffic. Encode: read k, v and
  write the state; lookup: read the queries and the state and write the outputs; recompute: the op traffic of
  the queries against the document's keys and values.
- A case that runs out of memory is recorded with ``status=oom`` and larger sequence lengths of the same
  variant are skipped. On CPU, eager softmax cases whose probability matrices alone would exceed
  ``memory_limit_gib`` are recorded as ``status=skipped`` instead of being attempted.

Suites: ``ops`` (each attention op on ``(batch, 12, seq, 64)``), ``models`` (BERT-base and RoBERTa-base sized
encoders with random weights, one per ``attn_implementation``), ``encode_lookup`` (``*_encode`` once per
document then ``*_lookup`` for ``queries`` queries, against recomputing softmax attention of those queries
over the document with SDPA).

A tiny CPU run::

    hf-lln bench --device cpu --suites ops,models,encode_lookup --seq-lens 32,64 --tokens 128 \\
        --model-sizes tiny --repeats 2 --out runs/bench
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from hf_lln.models.configuration_lln import LLN_SETTINGS_DEFAULTS
from hf_lln.variants import ATTENTION_VARIANTS, VARIANTS

SUITES = ("ops", "models", "encode_lookup")
PASSES = ("forward", "forward_backward")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The softmax rows this harness times: the written-out formula and PyTorch's fused kernels.
TIMED_SOFTMAX = ("eager", "sdpa")
ENCODE_LOOKUP_VARIANTS = ("lln", "cheap_linear")
OP_HEADS, OP_HEAD_DIM = 12, 64
CSV_FIELDS = (
    "suite",
    "device",
    "device_name",
    "dtype",
    "variant",
    "model",
    "pass",
    "seq_len",
    "batch",
    "tokens",
    "queries",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "repeats",
    "peak_mib",
    "floor_bytes",
    "floor_ms",
    "floor_fraction",
    "bandwidth_gbps",
    "status",
)


@dataclasses.dataclass
class BenchConfig:
    """What to run. ``seq_lens`` ascending; ``tokens`` per call (``batch = max(1, tokens // seq_len)``)."""

    out: Path
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    suites: tuple[str, ...] = SUITES
    variants: tuple[str, ...] = TIMED_SOFTMAX + ATTENTION_VARIANTS
    dtypes: tuple[str, ...] = tuple(DTYPES)
    passes: tuple[str, ...] = PASSES
    seq_lens: tuple[int, ...] = (512, 1024, 2048, 4096, 8192, 16384, 32768)
    tokens: int = 32768
    model_sizes: tuple[str, ...] = ("bert-base", "roberta-base")
    queries: tuple[int, ...] = (1, 64, 1024)
    warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 50
    time_budget: float = 0.5
    memory_limit_gib: float = 8.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_subset("suites", self.suites, SUITES)
        _check_subset("variants", self.variants, TIMED_SOFTMAX + ATTENTION_VARIANTS)
        _check_subset("dtypes", self.dtypes, tuple(DTYPES))
        _check_subset("passes", self.passes, PASSES)
        _check_subset("model_sizes", self.model_sizes, tuple(MODEL_SIZES))
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available")
        for name in ("seq_lens", "queries"):
            values = getattr(self, name)
            if not values or any(int(v) < 1 for v in values) or list(values) != sorted(values):
                raise ValueError(f"{name} must be ascending positive integers, got {values}")
        for name in ("tokens", "min_repeats", "max_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_repeats < self.min_repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) must be >= min_repeats ({self.min_repeats})")
        if self.warmup < 0 or self.time_budget <= 0 or self.memory_limit_gib <= 0:
            raise ValueError("warmup must be >= 0, time_budget and memory_limit_gib > 0")


def _check_subset(name: str, values: Iterable[str], allowed: tuple[str, ...]) -> None:
    values = tuple(values)
    unknown = [v for v in values if v not in allowed]
    if not values or unknown:
        raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values}")


# --------------------------------------------------------------------------------------------- measurement


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages alive at operator boundaries while the mode is active (CPU memory).

    Storages that exist before entering (``resident``: inputs, weights) are not counted. A storage is counted
    from the operator that first returns it until it is freed (checked through weak references after each
    operator).
    """

    def __init__(self, resident: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.resident = {t.untyped_storage().data_ptr() for t in resident}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key and key not in self.resident and key not in self.live:
                self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, config: BenchConfig) -> list[float]:
    """Milliseconds of each timed call of ``fn`` after ``config.warmup`` untimed ones (see module docstring)."""
    for _ in range(config.warmup):
        fn()
    _synchronize(device)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < config.max_repeats:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            tic = time.perf_counter()
            fn()
            times.append((time.perf_counter() - tic) * 1e3)
        if len(times) >= config.min_repeats and time.perf_counter() - started > config.time_budget:
            break
    return times


def peak_memory_bytes(
    fn: Callable[[], object], device: torch.device, resident: Iterable[torch.Tensor]
) -> int:
    """Extra bytes one call of ``fn`` needs above what is resident (see module docstring)."""
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with LiveTensorBytes(resident) as tracker:
        fn()
    return tracker.peak


def copy_bandwidth(device: torch.device, config: BenchConfig) -> float:
    """Device-to-device copy bandwidth in bytes/s: (read + write) bytes of a large ``copy_`` per second."""
    nbytes = (256 if device.type == "cuda" else 64) * 2**20
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    times = time_call(
        lambda: dst.copy_(src),
        device,
        dataclasses.replace(config, min_repeats=10, max_repeats=max(10, config.max_repeats)),
    )
    return 2 * nbytes / (statistics.median(times) / 1e3)


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


# ---------------------------------------------------------------------------------------------------- ops


def softmax_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out: ``softmax(q k^T / sqrt(d)) v``, materialising the probabilities."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype) @ v


def op_functions(device: torch.device, seed: int) -> dict[str, Callable[..., torch.Tensor]]:
    """Every benchmarked attention op as ``fn(q, k, v) -> out`` on ``(batch, heads, seq, head_dim)``: the softmax
    rows and each registered variant with the default config's options (Performer's projection seeded ``seed``)."""
    functions = {"eager": softmax_eager, "sdpa": F.scaled_dot_product_attention}
    settings = {**LLN_SETTINGS_DEFAULTS, "lln_performer_seed": seed}
    for name, variant in VARIANTS.items():
        options = variant.options(settings, OP_HEAD_DIM, 0)
        if "projection" in options:
            options["projection"] = options["projection"].to(device)
        functions[name] = functools.partial(variant.op, **options)
    return functions


def _op_floor_bytes(
    batch: int,
    seq: int,
    dtype: torch.dtype,
    backward: bool,
    heads: int = OP_HEADS,
    head_dim: int = OP_HEAD_DIM,
) -> int:
    """Bytes an attention op on ``(batch, heads, seq, head_dim)`` must move: q, k, v read and the output
    written (4 tensors); with the backward pass also q, k, v, the output and its gradient read and three
    gradients written (12 in all)."""
    tensor = batch * heads * seq * head_dim * (torch.finfo(dtype).bits // 8)
    return tensor * (12 if backward else 4)


class Runner:
    """Runs the suites of a :class:`BenchConfig`, appending one CSV row per case as soon as it is measured."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.device_name = (
            torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else f"cpu x{torch.get_num_threads()}"
        )
        self.bandwidth = copy_bandwidth(self.device, config)
        self.rows: list[dict] = []
        config.out.mkdir(parents=True, exist_ok=True)
        self.csv_path = config.out / "benchmark.csv"
        with self.csv_path.open("w", newline="") as handle:
            csv.DictWriter(handle, fieldnames=CSV_FIELDS).writeheader()

    def record(
        self, case: dict, status: str, times: list[float] | None = None, peak: int | None = None
    ) -> None:
        """Append one row: the case's identifying fields plus its measurements."""
        floor_ms = case["floor_bytes"] / self.bandwidth * 1e3
        row = {field: "" for field in CSV_FIELDS}
        row.update(case)
        row.update(
            device=self.device.type,
            device_name=self.device_name,
            bandwidth_gbps=round(self.bandwidth / 1e9, 2),
            floor_ms=round(floor_ms, 4),
            status=status,
        )
        if times:
            ordered = sorted(times)
            median = statistics.median(ordered)
            row.update(
                median_ms=round(median, 4),
                p10_ms=round(ordered[int(0.1 * (len(ordered) - 1))], 4),
                p90_ms=round(ordered[math.ceil(0.9 * (len(ordered) - 1))], 4),
                repeats=len(ordered),
                floor_fraction=round(floor_ms / median, 4) if median > 0 else "",
                peak_mib=round(peak / 2**20, 2),
            )
        self.rows.append(row)
        with self.csv_path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=CSV_FIELDS).writerow(row)

    def run_case(
        self, case: dict, make_call: Callable[[], tuple[Callable[[], object], list[torch.Tensor]]]
    ) -> bool:
        """Build the call with ``make_call() -> (fn, resident tensors)``, time it and take its peak memory.

        Returns False when the case failed (out of memory or an error, recorded in ``status``), so the caller
        skips longer sequences of the same variant.
        """
        try:
            fn, resident = make_call()
            times = time_call(fn, self.device, self.config)
            peak = peak_memory_bytes(fn, self.device, resident)
        except Exception as error:  # one failing case must not end a long run; its row records why
            status = (
                "oom"
                if _is_oom(error)
                else f"error: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
            )
            if status != "oom":
                print(
                    f"{case['suite']} {case['variant']} seq_len={case['seq_len']}: {status}", file=sys.stderr
                )
            self.record(case, status)
            return False
        finally:
            fn = resident = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.record(case, "ok", times, peak)
        return True

    def too_big_for_cpu(self, variant: str, batch: int, heads: int, seq: int, backward: bool) -> bool:
        """Eager softmax on CPU: would its probability matrices alone exceed ``memory_limit_gib``?"""
        probabilities = batch * heads * seq * seq * 4 * (3 if backward else 1)
        return (
            self.device.type == "cpu"
            and variant == "eager"
            and probabilities > self.config.memory_limit_gib * 2**30
        )

    def run_ops(self) -> None:
        config = self.config
        functions = op_functions(self.device, config.seed)
        generator = torch.Generator(self.device).manual_seed(config.seed)
        for dtype_name, pass_name, variant in itertools.product(
            config.dtypes, config.passes, config.variants
        ):
            dtype, backward = DTYPES[dtype_name], pass_name == "forward_backward"
            failed = False
            for seq in config.seq_lens:
                batch = max(1, config.tokens // seq)
                case = {
                    "suite": "ops",
                    "dtype": dtype_name,
                    "variant": variant,
                    "pass": pass_name,
                    "seq_len": seq,
                    "batch": batch,
                    "tokens": batch * seq,
                    "floor_bytes": _op_floor_bytes(batch, seq, dtype, backward),
                }
                if failed or self.too_big_for_cpu(variant, batch, OP_HEADS, seq, backward):
                    self.record(case, "skipped")
                    continue
                shape = (batch, OP_HEADS, seq, OP_HEAD_DIM)
                make_call = functools.partial(
                    _op_call, functions[variant], shape, dtype, self.device, generator, backward
                )
                failed = not self.run_case(case, make_call)

    def run_models(self) -> None:
        config = self.config
        for size, dtype_name in itertools.product(config.model_sizes, config.dtypes):
            dtype = DTYPES[dtype_name]
            model = build_encoder(size, max(config.seq_lens), dtype, self.device, config.seed)
            weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
            head_dim = model.config.hidden_size // heads
            for pass_name, variant in itertools.product(config.passes, config.variants):
                backward = pass_name == "forward_backward"
                model.train(backward)
                model.set_attn_implementation(variant)
                failed = False
                for seq in config.seq_lens:
                    batch = max(1, config.tokens // seq)
                    attention_bytes = _op_floor_bytes(batch, seq, dtype, backward, heads, head_dim)
                    case = {
                        "suite": "models",
                        "dtype": dtype_name,
                        "variant": variant,
                        "model": size,
                        "pass": pass_name,
                        "seq_len": seq,
                        "batch": batch,
                        "tokens": batch * seq,
                        "floor_bytes": weight_bytes * (3 if backward else 1) + layers * attention_bytes,
                    }
                    if failed or self.too_big_for_cpu(variant, batch, heads, seq, backward):
                        self.record(case, "skipped")
                        continue
                    make_call = functools.partial(_model_call, model, (batch, seq), backward, config.seed)
                    failed = not self.run_case(case, make_call)
                    model.zero_grad(set_to_none=True)
            del model

    def run_encode_lookup(self) -> None:
        """``*_encode`` once per document and ``*_lookup`` for each query count, against SDPA recomputation."""
        config = self.config
        generator = torch.Generator(self.device).manual_seed(config.seed)
        state_elements = OP_HEAD_DIM * OP_HEAD_DIM + 2 * OP_HEAD_DIM
        for dtype_name, seq in itertools.product(config.dtypes, config.seq_lens):
            dtype = DTYPES[dtype_name]
            element = torch.finfo(dtype).bits // 8
            k, v = (_random(1, seq, dtype, self.device, generator) for _ in range(2))
            queries_for = {m: _random(1, m, dtype, self.device, generator) for m in config.queries}
            base = {
                "suite": "encode_lookup",
                "dtype": dtype_name,
                "pass": "forward",
                "seq_len": seq,
                "batch": 1,
                "tokens": seq,
            }
            for variant in [name for name in ENCODE_LOOKUP_VARIANTS if name in config.variants]:
                encode, lookup = _encode_lookup_calls(
                    variant, k, v, q_std=queries_for[config.queries[-1]].float().std()
                )
                case = {
                    **base,
                    "variant": f"{variant}_encode",
                    "queries": "",
                    "floor_bytes": (2 * seq * OP_HEAD_DIM + state_elements) * OP_HEADS * element,
                }
                if not self.run_case(case, functools.partial(_no_grad_call, encode, [], [k, v])):
                    continue
                with torch.no_grad():
                    state = encode()
                for queries, q in queries_for.items():
                    case = {
                        **base,
                        "variant": f"{variant}_lookup",
                        "queries": queries,
                        "floor_bytes": (2 * queries * OP_HEAD_DIM + state_elements) * OP_HEADS * element,
                    }
                    self.run_case(case, functools.partial(_no_grad_call, lookup, [q, state], [q, k, v]))
            if "sdpa" in config.variants:
                for queries, q in queries_for.items():
                    case = {
                        **base,
                        "variant": "sdpa_recompute",
                        "queries": queries,
                        "floor_bytes": (2 * queries + 2 * seq) * OP_HEAD_DIM * OP_HEADS * element,
                    }
                    recompute = F.scaled_dot_product_attention
                    self.run_case(case, functools.partial(_no_grad_call, recompute, [q, k, v], [q, k, v]))


def _random(batch: int, seq: int, dtype, device, generator, requires_grad: bool = False) -> torch.Tensor:
    """A standard normal ``(batch, OP_HEADS, seq, OP_HEAD_DIM)`` tensor."""
    shape = (batch, OP_HEADS, seq, OP_HEAD_DIM)
    return torch.randn(shape, generator=generator, device=device).to(dtype).requires_grad_(requires_grad)


def _op_call(fn, shape, dtype, device, generator, backward: bool):
    """``(call, resident)`` for one op case: fresh q, k, v of ``shape``; forward under no_grad, or forward and
    backward from a fixed output gradient."""
    q, k, v = (_random(shape[0], shape[2], dtype, device, generator, backward) for _ in range(3))
    if not backward:
        return _no_grad_call(fn, [q, k, v], [q, k, v])
    grad = torch.randn_like(q)

    def forward_backward():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(grad)

    return forward_backward, [q, k, v]


def _model_call(model, shape: tuple[int, int], backward: bool, seed: int):
    """``(call, resident)`` for one model case on random token ids of ``shape = (batch, seq)``."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, shape, device=device, generator=generator)
    resident = [*model.parameters(), *model.buffers(), ids]
    if not backward:
        return _no_grad_call(lambda: model(input_ids=ids).last_hidden_state, [], resident)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids).last_hidden_state.float().square().mean().backward()

    return forward_backward, resident


def _no_grad_call(fn, args: list, resident: list[torch.Tensor]):
    """``(call, resident)`` where ``call()`` runs ``fn(*args)`` without autograd."""

    def call():
        with torch.no_grad():
            return fn(*args)

    return call, resident


def _encode_lookup_calls(variant: str, k, v, q_std):
    """``(encode() -> state, lookup(q, state))`` of a variant with a fixed-size state."""
    from hf_lln import ops

    if variant == "lln":
        return functools.partial(ops.lln_encode, k, v, q_std=q_std), ops.lln_lookup
    return functools.partial(ops.cheap_linear_encode, k, v), ops.cheap_linear_lookup


# ------------------------------------------------------------------------------------------------- models

MODEL_SIZES = {
    "bert-base": (
        "bert",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
    "roberta-base": (
        "roberta",
        dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            vocab_size=50265,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
    ),
    "tiny": (
        "bert",
        dict(
            hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, vocab_size=128
        ),
    ),
}


def build_encoder(size: str, max_seq: int, dtype: torch.dtype, device: torch.device, seed: int):
    """A randomly initialised encoder (``transformers.AutoModel``) of a named size with room for ``max_seq``
    positions; attention dropout off so every variant does the same work."""
    from transformers import AutoConfig, AutoModel

    model_type, sizes = MODEL_SIZES[size]
    # RoBERTa numbers positions from pad_token_id + 1, so it needs two spare position embeddings.
    config = AutoConfig.for_model(
        model_type, max_position_embeddings=max_seq + 2, attention_probs_dropout_prob=0.0, **sizes
    )
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, attn_implementation="sdpa", add_pooling_layer=False)
    return model.to(device=device, dtype=dtype)


# -------------------------------------------------------------------------------------------------- plots


def plot_results(rows: list[dict], out: Path) -> list[Path]:
    """Log-log PNGs: for each suite, device and dtype, time and peak memory against sequence length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    measured = [r for r in rows if r["status"] == "ok"]
    groups = sorted({(r["suite"], r["device"], r["dtype"], r["model"]) for r in measured})
    for suite, device, dtype, model in groups:
        selected = [
            r
            for r in measured
            if (r["suite"], r["device"], r["dtype"], r["model"]) == (suite, device, dtype, model)
        ]
        figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
        lines = sorted({(r["variant"], r["pass"], r["queries"]) for r in selected}, key=str)
        colors = {
            variant: f"C{i % 10}" for i, variant in enumerate(dict.fromkeys(r["variant"] for r in selected))
        }
        markers = {
            queries: "os^vD<>"[i % 7]
            for i, queries in enumerate(dict.fromkeys(r["queries"] for r in selected))
        }
        for variant, pass_name, queries in lines:
            points = sorted(
                (r["seq_len"], float(r["median_ms"]), float(r["peak_mib"]))
                for r in selected
                if (r["variant"], r["pass"], r["queries"]) == (variant, pass_name, queries)
            )
            label = variant + ("" if suite == "encode_lookup" else f" {pass_name.replace('_', '+')}")
            label += f" q={queries}" if queries != "" else ""
            style = dict(
                marker=markers[queries],
                markersize=3,
                color=colors[variant],
                linestyle="--" if pass_name == "forward_backward" else "-",
            )
            seqs = [p[0] for p in points]
            time_axis.plot(seqs, [p[1] for p in points], label=label, **style)
            memory_axis.plot(seqs, [max(p[2], 1e-3) for p in points], label=label, **style)
        for axis, ylabel in (
            (time_axis, "median time per call (ms)"),
            (memory_axis, "peak extra memory (MiB)"),
        ):
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("document length" if suite == "encode_lookup" else "sequence length")
            axis.set_ylabel(ylabel)
            axis.grid(True, which="both", alpha=0.3)
        title = f"{suite}{' ' + model if model else ''} · {device} · {dtype}"
        if suite != "encode_lookup":
            title += (
                f" · {selected[0]['tokens']} tokens per call"
                if len({r["tokens"] for r in selected}) == 1
                else ""
            )
        figure.suptitle(title)
        memory_axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        figure.tight_layout()
        path = out / f"{suite}{'_' + model if model else ''}_{device}_{dtype}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def markdown_tables(rows: list[dict]) -> str:
    """Doc-ready Markdown: one table per suite, model, dtype and pass; a row per sequence length (and query
    count), a column per variant; cells ``median ms / peak MiB / floor fraction`` or the failure status."""
    sections = []
    groups = dict.fromkeys((r["suite"], r["model"], r["dtype"], r["pass"]) for r in rows)
    for suite, model, dtype, pass_name in groups:
        selected = [
            r
            for r in rows
            if (r["suite"], r["model"], r["dtype"], r["pass"]) == (suite, model, dtype, pass_name)
        ]
        variants = list(dict.fromkeys(r["variant"] for r in selected))
        keys = list(dict.fromkeys((r["seq_len"], r["queries"]) for r in selected))
        first = selected[0]
        title = f"{suite}{' ' + model if model else ''}, {dtype}, {pass_name.replace('_', '+')}, {first['device_name']}"
        title += f" (copy bandwidth {first['bandwidth_gbps']} GB/s)"
        label = "doc length, queries" if suite == "encode_lookup" else "seq_len (batch)"
        lines = [f"**{title}**: ms / peak MiB / fraction of the bandwidth floor", ""]
        lines += ["| " + " | ".join([label, *variants]) + " |", "|" + "---|" * (len(variants) + 1)]
        for seq, queries in keys:
            cells = []
            for variant in variants:
                match = [
                    r
                    for r in selected
                    if (r["seq_len"], r["queries"], r["variant"]) == (seq, queries, variant)
                ]
                if not match:
                    cells.append("")
                elif match[0]["status"] != "ok":
                    cells.append(match[0]["status"].split(":")[0])
                else:
                    row = match[0]
                    cells.append(
                        f"{row['median_ms']:.3g} / {row['peak_mib']:.4g} / {row['floor_fraction']:.2f}"
                    )
            batch = next(r["batch"] for r in selected if (r["seq_len"], r["queries"]) == (seq, queries))
            key = f"{seq}, {queries or 'encode'}" if suite == "encode_lookup" else f"{seq} ({batch})"
            lines.append("| " + " | ".join([key, *cells]) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def run_benchmark(config: BenchConfig) -> list[dict]:
    """Run every suite of ``config``. ``benchmark.csv`` grows row by row; ``benchmark.md``
    (:func:`markdown_tables`) and the PNG plots are rewritten after each suite, so a run cut short keeps the
    tables and plots of the suites it finished."""
    runner = Runner(config)
    for suite in config.suites:
        getattr(runner, f"run_{suite}")()
        (config.out / "benchmark.md").write_text(markdown_tables(runner.rows))
        plot_results(runner.rows, config.out)
    return runner.rows


# ----------------------------------------------------------------------------------------------------- CLI


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``hf-lln bench``."""
    defaults = BenchConfig(out=Path("runs/bench"))
    parser = subparsers.add_parser(
        "bench",
        help="time and peak memory of attention ops and whole encoders against sequence length",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for benchmark.csv and the PNG plots")
    parser.add_argument(
        "--device", default=defaults.device, help="cpu, cuda or cuda:N (default: %(default)s)"
    )
    parser.add_argument(
        "--suites", type=_names, default=defaults.suites, help=f"comma list of {','.join(SUITES)}"
    )
    parser.add_argument(
        "--variants", type=_names, default=defaults.variants, help="comma list of attention implementations"
    )
    parser.add_argument("--dtypes", type=_names, default=defaults.dtypes, help="comma list of fp32,bf16")
    parser.add_argument(
        "--passes", type=_names, default=defaults.passes, help="comma list of forward,forward_backward"
    )
    parser.add_argument("--seq-lens", type=_ints, default=defaults.seq_lens, help="ascending comma list")
    parser.add_argument(
        "--tokens", type=int, default=defaults.tokens, help="tokens per call (default: %(default)s)"
    )
    parser.add_argument(
        "--model-sizes",
        type=_names,
        default=defaults.model_sizes,
        help=f"comma list of {','.join(MODEL_SIZES)}",
    )
    parser.add_argument(
        "--queries", type=_ints, default=defaults.queries, help="queries per document (encode_lookup)"
    )
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--min-repeats", type=int, default=defaults.min_repeats)
    parser.add_argument("--max-repeats", type=int, default=defaults.max_repeats)
    parser.add_argument("--repeats", type=int, help="shorthand: min and max repeats both set to this")
    parser.add_argument(
        "--time-budget", type=float, default=defaults.time_budget, help="seconds of timed calls per case"
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=defaults.memory_limit_gib,
        help="CPU only: skip eager softmax cases whose probabilities exceed this",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    config = BenchConfig(
        out=args.out,
        device=args.device,
        suites=args.suites,
        variants=args.variants,
        dtypes=args.dtypes,
        passes=args.passes,
        seq_lens=args.seq_lens,
        tokens=args.tokens,
        model_sizes=args.model_sizes,
        queries=args.queries,
        warmup=args.warmup,
        min_repeats=args.repeats or args.min_repeats,
        max_repeats=args.repeats or args.max_repeats,
        time_budget=args.time_budget,
        memory_limit_gib=args.memory_limit_gib,
        seed=args.seed,
    )
    rows = run_benchmark(config)
    print(markdown_tables(rows))
    print(f"wrote {config.out / 'benchmark.csv'} and the plots to {config.out}")
    return 0
