"""Fused LLN / LLN+Diag / cheap linear kernels against SDPA (its FlashAttention and cuDNN backends) and the PyTorch
paths, with the memory floor.

Checks the kernels first (poisoned outputs, forward and gradients against the PyTorch path in
float64), then times forward and forward+backward at a fixed number of tokens per call
(``batch = tokens_per_batch // seq``), with ``hf_lln.experiments.bench``'s floor conventions, and compares launch
settings of the fused kernels at the shortest and longest sequence. ``ms`` columns are per call with
calls queued back to back (host work overlapping the GPU's, as between a model's layers); ``latency``
is one synchronised call, host launch time included; ``host ms`` is the host's time per call.
``*_dropout`` rows run attention dropout 0.1 (BERT's default). On the GPU::

    python -m hf_lln.experiments.bench_kernels --output_file runs/bench_kernels.csv
    python -m hf_lln.experiments.bench_kernels --seq_lengths 512 2048 8192 32768 --settings default \
        --impls sdpa_flash fused_lln fused_cheap_linear fused_lln_diag fused_lln_diag_dropout

A tiny CPU run (PyTorch paths only; the fused rows need CUDA)::

    python -m hf_lln.experiments.bench_kernels --device cpu --seq_lengths 64 128 --tokens_per_batch 256 --settings default
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import statistics
import time

import torch
import torch.nn.functional as F

from hf_lln import ops
from hf_lln.experiments.bench import Timing, copy_bandwidth, op_floor_bytes, peak_memory_bytes, time_call
from hf_lln.ops import triton as fused
from hf_lln.ops.dispatch import use_kernels

HEADS = 12
DROPOUT_P = 0.1
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SETTINGS = {
    "default": {},
    "programs_per_sm=4": {"programs_per_sm": 4},
    # sequences always shared out, one program per row tile (atomic sums, zero fills, no prologue or
    # unsplit backward kernel): without the programs_per_sm part, large batches still got one program per
    # (batch, head)
    "always_split": {"unsplit_programs_per_sm": 2**31, "programs_per_sm": 2**20},
    "warps=8": {"num_warps": 8},
    "stats_warps=4": {"num_warps_stats": 4},
    "prologue_warps=8": {"num_warps_prologue": 8},
    # more rows in flight per program of the pipelined statistics loop (32-row tiles need the 8 warps: 127
    # registers there, 246 at 4)
    "prologue_rows=32,warps=8": {"prologue_rows": 32, "num_warps_prologue": 8},
    "unsplit_backward_warps=8": {"num_warps_backward_unsplit": 8},
    "unsplit_backward_rows=16": {"backward_unsplit_rows": 16},
    "backward_warps=8": {"num_warps_backward": 8},
    "backward_stages=3": {"num_stages_backward": 3},  # the query pass as before Triton 3.8 made it spill
    "diag_warps=8": {"num_warps_diag": 8},
    "diag_backward_warps=8": {"num_warps_diag_backward": 8},
    # output-pass programs of calls with one program per (batch, head) cover fewer row tiles (each loads the
    # (head_dim, v_dim) state once for all of them)
    "output_tiles=1": {"output_tiles_per_program": 1},
    "output_tiles=2": {"output_tiles_per_program": 2},
    "output_tiles=16": {"output_tiles_per_program": 16},
}


def implementations(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
    """Name -> ``fn(q, k, v)``; the fused ones force the kernels, the torch ones the PyTorch paths. ``sdpa_cudnn``
    (CUDA, half precision) is the SDPA backend Transformers' ``sdpa`` runs in a BERT training step on Hopper GPUs
    with PyTorch's default priorities, ``sdpa_flash`` the FlashAttention-2 backend."""

    def forced(mode, fn):
        def call(q, k, v, *mask):
            with use_kernels(mode):
                return fn(q, k, v, *mask)

        return call

    def sdpa_on(backend, q, k, v, dropout_p=0.0):
        with torch.nn.attention.sdpa_kernel(backend) if device.type == "cuda" else contextlib.nullcontext():
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)

    sdpa_flash = functools.partial(sdpa_on, torch.nn.attention.SDPBackend.FLASH_ATTENTION)
    sdpa_cudnn = functools.partial(sdpa_on, torch.nn.attention.SDPBackend.CUDNN_ATTENTION)

    lln_diag_dropout = functools.partial(ops.lln_diag_attention, dropout_p=DROPOUT_P)
    impls = {
        "sdpa_flash": sdpa_flash,
        "sdpa_flash_dropout": functools.partial(sdpa_flash, dropout_p=DROPOUT_P),
        "torch_lln": forced("torch", ops.lln_attention),
        "torch_lln_diag": forced("torch", ops.lln_diag_attention),
        "torch_lln_diag_dropout": forced("torch", lln_diag_dropout),
        "torch_cheap_linear": forced("torch", ops.cheap_linear_attention),
    }
    if device.type == "cuda" and dtype != torch.float32:
        impls["sdpa_cudnn"] = sdpa_cudnn
        impls["sdpa_cudnn_dropout"] = functools.partial(sdpa_cudnn, dropout_p=DROPOUT_P)
    if device.type == "cuda" and fused.is_available():
        impls["fused_lln"] = forced("triton", ops.lln_attention)
        impls["fused_lln_diag"] = forced("triton", ops.lln_diag_attention)
        impls["fused_lln_diag_dropout"] = forced("triton", lln_diag_dropout)
        impls["fused_cheap_linear"] = fused.fused_cheap_linear_attention
        for name in ("fused_lln", "fused_lln_diag", "fused_lln_diag_dropout"):
            impls[f"{name}_masked"] = with_full_mask(impls[name])
    return impls


def with_full_mask(fn):
    """``fn`` given a key padding mask in which every token is real, as in a training step on packed texts
    (run_mlm's): Transformers hands the mask over even then, and the kernels read it."""

    masks = {}

    def call(q, k, v):
        key = (q.shape[0], q.shape[2], q.device)
        if key not in masks:
            masks[key] = torch.ones(key[:2], dtype=torch.bool, device=q.device)
        return fn(q, k, v, masks[key])

    return call


def check_kernels(device: torch.device, dtype: torch.dtype, head_dim: int) -> list[str]:
    """Relative errors of the fused kernels (out, dq, dk, dv) on random padded inputs, outputs poisoned."""
    lines = []
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(3, HEADS, 1000, head_dim, generator=gen, device=device) for _ in range(3))
    mask = torch.arange(1000, device=device)[None, :] < torch.tensor([[1000], [999], [321]], device=device)
    grad = torch.randn(3, HEADS, 1000, head_dim, generator=gen, device=device, dtype=torch.float64)
    # the fused cheap linear attention is called directly: the PyTorch operator does not dispatch to it
    variants = {
        "lln": (ops.lln_attention, ops.lln_attention),
        "lln_diag": (ops.lln_diag_attention, ops.lln_diag_attention),
        "cheap_linear": (ops.cheap_linear_attention, fused.fused_cheap_linear_attention),
    }
    for name, (torch_fn, fused_fn) in variants.items():
        results = {}
        for mode, cast, fn in (("torch", torch.float64, torch_fn), ("triton", dtype, fused_fn)):
            leaves = [t.to(cast).requires_grad_() for t in (q, k, v)]
            if mode == "triton":
                torch.full((1 << 28,), float("nan"), device=device)
            with use_kernels(mode):
                out = fn(*leaves, mask)
            out.backward(grad.to(out.dtype))
            results[mode] = [out, *(t.grad for t in leaves)]
        errors = [
            ((got.double() - want).norm() / want.norm()).item()
            for got, want in zip(results["triton"], results["torch"], strict=True)
        ]
        lines.append(f"check {name:12s} " + " ".join(f"{e:.1e}" for e in errors))
    return lines


def measure(fn, shape, dtype, device, timing: Timing, backward: bool) -> tuple[float, float, float, int]:
    """(ms per call back to back, latency ms, host ms, peak extra bytes) of one call on fresh random inputs
    (never zeros); on CPU the back-to-back time is the latency."""
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=gen, device=device).to(dtype) for _ in range(3))
    if backward:
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        grad = torch.randn(*shape, generator=gen, device=device).to(dtype)

        def call():
            fn(q, k, v).backward(grad)
            q.grad = k.grad = v.grad = None

    else:

        def call():
            with torch.no_grad():
                fn(q, k, v)

    latency = statistics.median(time_call(call, device, timing))
    host = []
    for _ in range(10):
        tic = time.perf_counter()
        call()
        host.append((time.perf_counter() - tic) * 1e3)
    if device.type == "cuda":
        torch.cuda.synchronize()
    throughput = back_to_back_ms(call, device) if device.type == "cuda" else latency
    return throughput, latency, statistics.median(host), peak_memory_bytes(call, device, (q, k, v))


def back_to_back_ms(call, device, calls: int = 30, rounds: int = 5) -> float:
    """Milliseconds per call when calls are queued back to back (host work overlaps the GPU's, as
    between the layers of a model): median over ``rounds`` of one event pair around ``calls`` calls."""
    results = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        results.append(start.elapsed_time(end) / calls)
    return statistics.median(results)


def profile_kernels(fn, shape, dtype, device) -> list[str]:
    """Device time per kernel of one forward+backward call (torch.profiler), largest first."""
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=gen, device=device).to(dtype).requires_grad_() for _ in range(3))
    grad = torch.randn(*shape, generator=gen, device=device).to(dtype)

    def call():
        fn(q, k, v).backward(grad)
        # as ``measure`` does: gradients left in place would add an accumulation kernel per input to each call
        q.grad = k.grad = v.grad = None

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            call()
        torch.cuda.synchronize()
    # host spans that enclose the kernels
    wrappers = ("aten", "cuda", "autograd", "torch::autograd", "_Fused")
    events = [e for e in prof.key_averages() if e.device_time_total > 0 and not e.key.startswith(wrappers)]
    events.sort(key=lambda e: -e.device_time_total)
    return [f"  {e.key[:60]:60s} {e.device_time_total / 5e3:8.3f} ms/call" for e in events[:10]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    parser.add_argument("--seq_lengths", nargs="+", type=int, default=[512, 2048, 8192, 32768])
    parser.add_argument(
        "--tokens_per_batch", type=int, default=65536, help="batch = tokens_per_batch // seq, at least 1"
    )
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument(
        "--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS, help="fused kernel launch settings"
    )
    parser.add_argument("--impls", nargs="+", default=None, help="implementations to time (default all)")
    parser.add_argument("--output_file", default=None, help="CSV file for the rows")
    parser.add_argument("--profile", action="store_true", help="per-kernel device times of the fused ops")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    seq_lens, settings = args.seq_lengths, args.settings
    timing = Timing(warmup=3, min_repeats=10, max_repeats=100)
    bandwidth = copy_bandwidth(device, timing)
    impls = implementations(device, dtype)
    if "fused_lln" in impls:
        for line in check_kernels(device, dtype, args.head_dim):
            print(line, flush=True)
    if args.impls:
        wanted = args.impls
        unknown = sorted(set(wanted) - set(impls))
        if unknown:
            parser.error(f"--impls: unknown or unavailable here: {unknown}; choose from {sorted(impls)}")
        impls = {name: impls[name] for name in wanted}
    rows = []
    for seq in seq_lens:
        shape = (max(1, args.tokens_per_batch // seq), HEADS, seq, args.head_dim)
        for name, fn in impls.items():
            names = (
                settings if name.startswith("fused") and seq in (seq_lens[0], seq_lens[-1]) else ["default"]
            )
            for setting in names:
                row = {"seq": seq, "impl": name, "setting": setting}
                for backward in (False, True):
                    floor = (
                        op_floor_bytes(shape[0], seq, dtype, backward, HEADS, args.head_dim) / bandwidth * 1e3
                    )
                    with fused_launch_config(setting):
                        ms, latency, host_ms, peak = measure(fn, shape, dtype, device, timing, backward)
                    key = "fwd_bwd" if backward else "fwd"
                    row |= {f"{key}_ms": ms, f"{key}_latency_ms": latency, f"{key}_host_ms": host_ms}
                    row[f"{key}_floor_ms"] = floor
                    row[f"{key}_peak_mib"] = peak / 2**20
                rows.append(row)
                print(format_row(row), flush=True)
    if args.profile and any(name.startswith("fused") for name in impls):
        for seq in (seq_lens[0], seq_lens[-1]):
            for name in [name for name in impls if name.startswith("fused")]:
                shape = (max(1, args.tokens_per_batch // seq), HEADS, seq, args.head_dim)
                for setting in settings:
                    print(f"profile {name} seq {seq} {setting} (forward+backward):")
                    with fused_launch_config(setting):
                        print("\n".join(profile_kernels(impls[name], shape, dtype, device)))
    print(f"\ndevice {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, {args.dtype}, "
          f"copy bandwidth {bandwidth / 1e12:.2f} TB/s, tokens/call {args.tokens_per_batch}, heads {HEADS}, head_dim {args.head_dim}")  # fmt: skip
    print(HEADER)
    for row in rows:
        print(format_row(row))
    if args.output_file:
        with open(args.output_file, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


HEADER = (
    "| seq | impl | setting | fwd ms | fwd latency | fwd host ms | fwd floor | fwd/floor | fwd+bwd ms | f+b latency "
    "| f+b host ms | f+b floor | f+b peak MiB |\n" + "|---" * 13 + "|"
)


def format_row(row: dict) -> str:
    return (
        f"| {row['seq']} | {row['impl']} | {row['setting']} | {row['fwd_ms']:.3f} | {row['fwd_latency_ms']:.3f} | "
        f"{row['fwd_host_ms']:.3f} | {row['fwd_floor_ms']:.3f} | {row['fwd_ms'] / row['fwd_floor_ms']:.2f} | "
        f"{row['fwd_bwd_ms']:.3f} | {row['fwd_bwd_latency_ms']:.3f} | {row['fwd_bwd_host_ms']:.3f} | "
        f"{row['fwd_bwd_floor_ms']:.3f} | {row['fwd_bwd_peak_mib']:.0f} |"
    )


@contextlib.contextmanager
def fused_launch_config(setting: str):
    """Apply one of ``SETTINGS`` to the fused kernels' launch configuration inside the block."""
    if setting == "default":
        yield
        return
    from hf_lln.ops.triton import functions

    saved = functions.launch_config
    functions.launch_config = dataclasses.replace(saved, **SETTINGS[setting])
    try:
        yield
    finally:
        functions.launch_config = saved


if __name__ == "__main__":
    raise SystemExit(main())
