"""The host's time per attention call through Transformers' attention interface, side by side in one run.

Where a training step's attention waits on Python rather than on the GPU (docs/benchmark.md, fourth December run).
Each row calls one attention implementation as a BERT/RoBERTa layer does: ``query, key, value: (batch, heads, seq,
head_dim)`` views of ``(batch, seq, heads, head_dim)`` tensors, half the rows padded by an eighth; hf_lln's
variants through ``hf_lln.integration.attention.ATTENTION_FUNCTIONS`` with the key padding mask, ``sdpa`` through
Transformers' ``sdpa_attention_forward`` with the 4-D mask its models build. Columns: the host's time of one
forward and of one backward with the device idle before each (median of ``--repeats``), and the host's time per
call of ``--calls`` forward+backward calls queued back to back, beside their wall time per call: where the two are
equal the host bounds the call, where the host's is less it runs ahead of the GPU. Attention dropout applies to the
implementations that take it (sdpa, lln_diag); the others get one row.

    python -m hf_lln.experiments.attention_host_time                       # CUDA: 64 x 512 tokens, bf16
    python -m hf_lln.experiments.attention_host_time --batch 2 --seq 64 --calls 3 --repeats 3  # CPU, float32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from hf_lln.experiments.bench.measure import synchronize
from hf_lln.integration.attention import ATTENTION_FUNCTIONS
from hf_lln.models.configuration_lln import LLNRobertaConfig
from hf_lln.variants import VARIANTS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--implementations", nargs="+", choices=["sdpa", *VARIANTS], default=["sdpa", "lln", "lln_diag"]
    )
    parser.add_argument("--dropouts", nargs="+", type=float, default=[0.0, 0.1])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--dtype", choices=DTYPES, help="default: bf16 on CUDA, fp32 on the CPU")
    parser.add_argument(
        "--repeats", type=int, default=20, help="idle calls timed per row (the median is shown)"
    )
    parser.add_argument("--calls", type=int, default=50, help="forward+backward calls queued back to back")
    parser.add_argument("--warmup", type=int, default=5)
    return parser.parse_args(argv)


class _Layer(torch.nn.Module):
    """What an attention function reads of a BERT/RoBERTa self-attention module."""

    def __init__(self, config):
        super().__init__()
        self.config, self.is_causal, self.layer_idx = config, False, 0


def _takes_dropout(implementation: str) -> bool:
    return implementation == "sdpa" or VARIANTS[implementation].takes_dropout


def host_times(implementation: str, dropout: float, args, device: torch.device) -> dict[str, float]:
    """``{fwd_idle, bwd_idle, queued_host, queued_wall}`` in ms per call for one row."""
    batch, seq, heads, head_dim = args.batch, args.seq, args.heads, args.head_dim
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    layer = _Layer(LLNRobertaConfig(num_attention_heads=heads, hidden_size=heads * head_dim)).train()
    generator = torch.Generator(device).manual_seed(0)
    sources = [
        torch.randn(
            batch, seq, heads, head_dim, device=device, dtype=dtype, generator=generator
        ).requires_grad_()
        for _ in range(3)
    ]
    mask = torch.ones(batch, seq, dtype=torch.bool, device=device)
    mask[batch // 2 :, seq - seq // 8 :] = False
    dense_mask = mask[:, None, None, :].expand(batch, 1, seq, seq)
    grad = torch.randn(batch, seq, heads, head_dim, device=device, dtype=dtype, generator=generator)

    def forward():
        q, k, v = (x.transpose(1, 2) for x in sources)
        if implementation == "sdpa":
            return sdpa_attention_forward(
                layer, q, k, v, dense_mask, scaling=head_dim**-0.5, dropout=dropout
            )[0]
        function = ATTENTION_FUNCTIONS[implementation]
        return function(layer, q, k, v, mask, scaling=head_dim**-0.5, dropout=dropout)[0]

    for _ in range(args.warmup):
        forward().backward(grad)
    forward_host, backward_host = [], []
    for _ in range(args.repeats):
        synchronize(device)
        start = time.perf_counter()
        out = forward()
        forward_host.append(time.perf_counter() - start)
        synchronize(device)
        start = time.perf_counter()
        out.backward(grad)
        backward_host.append(time.perf_counter() - start)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.calls):
        forward().backward(grad)
    queued = time.perf_counter() - start
    synchronize(device)
    wall = time.perf_counter() - start
    return {
        "fwd_idle": statistics.median(forward_host) * 1e3,
        "bwd_idle": statistics.median(backward_host) * 1e3,
        "queued_host": queued / args.calls * 1e3,
        "queued_wall": wall / args.calls * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"#### host ms per attention call, ({args.batch}, {args.heads}, {args.seq}, {args.head_dim}), {name}, "
        f"torch {torch.__version__}\n"
    )
    print("| attention | dropout | fwd host, idle | bwd host, idle | queued host | queued wall |")
    print("|---|---:|---:|---:|---:|---:|")
    for implementation in args.implementations:
        for dropout in args.dropouts if _takes_dropout(implementation) else [0.0]:
            t = host_times(implementation, dropout, args, device)
            print(
                f"| {implementation} | {dropout:g} | {t['fwd_idle']:.3f} | {t['bwd_idle']:.3f} | "
                f"{t['queued_host']:.3f} | {t['queued_wall']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
