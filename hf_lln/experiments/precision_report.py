"""Half-precision error of every attention variant against its float64 dense reference.

q and k are scaled by 1, 10 and 100 (v is not); the reference runs in float64 on the same rounded inputs, so
the table shows the error the operator adds. Prints a Markdown table.

    python -m hf_lln.experiments.precision_report --seq_length 65 --head_dim 64
"""

from __future__ import annotations

import argparse

import torch

from hf_lln import ops
from hf_lln.ops import reference

VARIANTS = {
    "lln": (ops.lln_attention, reference.dense_lln),
    "lln_diag": (ops.lln_diag_attention, reference.dense_lln_diag),
    "block_diag": (ops.block_diag_attention, reference.dense_block_diag),
    "cheap_linear": (ops.cheap_linear_attention, reference.dense_cheap_linear),
    "linear_elu": (ops.linear_elu_attention, reference.dense_linear_elu),
    "performer": (ops.performer_attention, reference.dense_performer),
    "cosformer": (ops.cosformer_attention, reference.dense_cosformer),
}


def relative_error(out: torch.Tensor, ref: torch.Tensor, rows: torch.Tensor) -> float:
    diff = (out.double() - ref) * rows
    return (diff.norm() / (ref * rows).norm()).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq_length", type=int, default=65)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    args = parser.parse_args(argv)

    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, args.heads, args.seq_length, args.head_dim)
    base = [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(3)]
    lengths = torch.randint(1, args.seq_length + 1, (args.batch_size,), generator=generator)
    lengths[0] = args.seq_length
    mask = torch.arange(args.seq_length)[None, :] < lengths[:, None]
    rows = mask[:, None, :, None]
    projection = ops.performer_projection(2 * args.head_dim, args.head_dim, seed=0, dtype=torch.float64)

    print(
        f"| variant | dtype | q,k x1 | q,k x10 | q,k x100 |  (causal={args.causal}, seq={args.seq_length}, head_dim={args.head_dim})"
    )
    print("|---|---|---|---|---|")
    for name, (fast, dense) in VARIANTS.items():
        extra = {"projection": projection} if name == "performer" else {}
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            cells = []
            for spread in (1.0, 10.0, 100.0):
                q, k, v = (t.to(dtype) for t in (spread * base[0], spread * base[1], base[2]))
                out = fast(q, k, v, mask, causal=args.causal, **extra)
                ref = dense(q.double(), k.double(), v.double(), mask, causal=args.causal, **extra)
                finite = "" if torch.isfinite(out).all() else " (non-finite!)"
                cells.append(f"{relative_error(out, ref, rows):.1e}{finite}")
            print(f"| {name} | {str(dtype).removeprefix('torch.')} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
