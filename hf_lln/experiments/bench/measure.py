"""Measurement primitives: timing a call, its peak extra memory, the copy bandwidth and an op's byte floor.

These take no benchmark configuration beyond a :class:`Timing`, so scripts (``hf_lln.experiments.bench_kernels``) time
their own calls the way ``hf-lln bench`` does.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# The head layout of the ops and encode_lookup suites and op_floor_bytes' default: BERT-base's 12 heads of 64.
OP_HEADS, OP_HEAD_DIM = 12, 64


@dataclasses.dataclass(frozen=True)
class Timing:
    """How a call is timed: ``warmup`` untimed calls, then at least ``min_repeats`` and at most
    ``max_repeats`` timed calls, as many as fit in ``time_budget`` seconds."""

    warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 50
    time_budget: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_repeats", "max_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_repeats < self.min_repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) must be >= min_repeats ({self.min_repeats})")
        if self.warmup < 0 or self.time_budget <= 0:
            raise ValueError(
                f"warmup must be >= 0 and time_budget > 0, got {self.warmup} and {self.time_budget}"
            )


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


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, timing: Timing) -> list[float]:
    """Milliseconds of each timed call of ``fn`` after ``timing.warmup`` untimed ones: CUDA events on GPU,
    ``time.perf_counter`` on CPU; at least ``min_repeats`` calls, then more until ``time_budget`` seconds
    have passed or ``max_repeats`` calls were timed."""
    for _ in range(timing.warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < timing.max_repeats:
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
        if len(times) >= timing.min_repeats and time.perf_counter() - started > timing.time_budget:
            break
    return times


def peak_memory_bytes(
    fn: Callable[[], object], device: torch.device, resident: Iterable[torch.Tensor]
) -> int:
    """Extra bytes one call of ``fn`` needs above what is resident: on GPU ``torch.cuda.max_memory_allocated``
    minus the allocation before the call; on CPU the peak of live tensor bytes at operator boundaries
    (:class:`LiveTensorBytes`, which does not count the tensors in ``resident``)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with LiveTensorBytes(resident) as tracker:
        fn()
    return tracker.peak


def copy_bandwidth(device: torch.device, timing: Timing) -> float:
    """Device-to-device copy bandwidth in bytes/s: (read + write) bytes of a large ``copy_`` (256 MiB on GPU,
    64 MiB on CPU) per second, the median of at least 10 timed copies."""
    nbytes = (256 if device.type == "cuda" else 64) * 2**20
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    timing = dataclasses.replace(timing, min_repeats=10, max_repeats=max(10, timing.max_repeats))
    times = time_call(lambda: dst.copy_(src), device, timing)
    return 2 * nbytes / (statistics.median(times) / 1e3)


def op_floor_bytes(
    batch: int,
    seq: int,
    dtype: torch.dtype,
    backward: bool,
    heads: int = OP_HEADS,
    head_dim: int = OP_HEAD_DIM,
) -> int:
    """Bytes an attention op on ``(batch, heads, seq, head_dim)`` tensors of ``dtype`` must move at the least:
    q, k, v read and the output written (4 tensors); with the backward pass (``backward=True``) also q, k, v,
    the output and its gradient read and three gradients written (12 in all). Divided by
    :func:`copy_bandwidth` it is the call's memory-bandwidth floor in seconds."""
    tensor = batch * heads * seq * head_dim * (torch.finfo(dtype).bits // 8)
    return tensor * (12 if backward else 4)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device (or host) running out of memory."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()
