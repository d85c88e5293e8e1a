"""Timing and memory harness (``hf-lln bench``): attention ops, whole encoders, and the encode/lookup path.

Methodology, the same for every row so rows compare:

- **Fixed tokens per call.** Each call processes ``tokens_per_batch`` tokens:
  ``batch = max(1, tokens_per_batch // seq_len)``, so a linear-time variant shows a flat time curve and a
  quadratic one a slope of one on the log-log plots.
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

Modules: :mod:`.config` (what to run), :mod:`.measure` (timing, peak memory, copy bandwidth, the op floor),
:mod:`.cases` (one case: build, measure, record), :mod:`.ops_suite`, :mod:`.models_suite`,
:mod:`.encode_lookup_suite`, :mod:`.output` (CSV, Markdown, plots), :mod:`.run` (a whole run) and
:mod:`.cli` (``hf-lln bench``).

A tiny CPU run::

    hf-lln bench --device cpu --suites ops models encode_lookup --seq_lengths 32 64 --tokens_per_batch 128 \\
        --model_sizes tiny --repeats 2 --output_dir runs/bench
"""

from hf_lln.experiments.bench.config import MODEL_SIZES, SUITES, BenchConfig
from hf_lln.experiments.bench.measure import (
    LiveTensorBytes,
    Timing,
    copy_bandwidth,
    op_floor_bytes,
    peak_memory_bytes,
    time_call,
)
from hf_lln.experiments.bench.output import markdown_tables, plot_results
from hf_lln.experiments.bench.run import run_benchmark

__all__ = [
    "MODEL_SIZES",
    "SUITES",
    "BenchConfig",
    "LiveTensorBytes",
    "Timing",
    "copy_bandwidth",
    "markdown_tables",
    "op_floor_bytes",
    "peak_memory_bytes",
    "plot_results",
    "run_benchmark",
    "time_call",
]
