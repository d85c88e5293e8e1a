"""One benchmark case at a time: build its call, time it, take its peak memory, record its row.

A *case* is a dict of the identifying CSV fields (suite, dtype, variant, pass, seq_len, batch, tokens, ...)
and its ``floor_bytes``; a *call* is ``(fn, resident)``: the function to time and the tensors that exist
before it runs (inputs, weights), which the peak memory leaves out.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable

import torch

from hf_lln.experiments.bench.config import BenchConfig
from hf_lln.experiments.bench.measure import copy_bandwidth, is_out_of_memory, peak_memory_bytes, time_call
from hf_lln.experiments.bench.output import CSV_FIELDS, CsvLog

Call = tuple[Callable[[], object], list[torch.Tensor]]


class CaseRunner:
    """Runs the cases of a :class:`BenchConfig` on its device, appending one CSV row per case as soon as it is
    measured (``rows`` holds them all). The copy bandwidth is measured once, when it is created."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.device_name = (
            torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else f"cpu x{torch.get_num_threads()}"
        )
        self.bandwidth = copy_bandwidth(self.device, config.timing)
        self.rows: list[dict] = []
        self.csv = CsvLog(config.output_dir)

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
        self.csv.append(row)

    def run_case(self, case: dict, make_call: Callable[[], Call]) -> bool:
        """Build the call with ``make_call() -> (fn, resident)``, time it and take its peak memory.

        Returns False when the case failed (out of memory or an error, recorded in ``status``), so the caller
        skips longer sequences of the same variant.
        """
        try:
            fn, resident = make_call()
            times = time_call(fn, self.device, self.config.timing)
            peak = peak_memory_bytes(fn, self.device, resident)
        except Exception as error:  # one failing case must not end a long run; its row records why
            status = (
                "oom"
                if is_out_of_memory(error)
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


def no_grad_call(fn: Callable[..., object], args: list, resident: list[torch.Tensor]) -> Call:
    """``(call, resident)`` where ``call()`` runs ``fn(*args)`` without autograd."""

    def call():
        with torch.no_grad():
            return fn(*args)

    return call, resident
