"""Registers, spills and shared memory of the fused kernels on sm_90 (H100), without a GPU.

Compiles each kernel with Triton for the Hopper target on the CPU and runs the ptxas that ships with
Triton in verbose mode on the PTX; a kernel that spills or needs 255 registers at its warp count
leaves an SM with few programs, which limits the bandwidth of these memory-bound passes::

    python -m hf_lln.experiments.kernel_resources                  # bf16, head_dim 64, block 64
    python -m hf_lln.experiments.kernel_resources --dtype fp32 --head_dim 32 --block 32
    python -m hf_lln.experiments.kernel_resources --head_dim 128 --block 128
    python -m hf_lln.experiments.kernel_resources --no_dropout     # the LLN+Diag block passes without dropout
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from hf_lln.ops.triton import cheap_linear, functions, kernels

FLOAT32_POINTERS = {"ALPHA", "BETA", "SHIFT", "STATE", "NORM", "W_LLN", "W_DIAG", "D_STATE", "D_NORM"}
FLOAT32_POINTERS |= {"D_W_LLN", "D_W_DIAG", "MOMENTS", "KMAX", "KMIN", "COUNT"}
FLOAT_SCALARS = {
    "scale",
    "eps",
    "scale_log2e",
    "softmax_factor",
    "const_a",
    "const_b",
    "min_std",
    "dropout_p",
}


def kernel_specs(
    dtype: str, head_dim: int, block: int, dropout: bool = True
) -> list[tuple[str, dict, int, int]]:
    """(kernel, constexprs, warps, stages) as the launchers run them for a masked LLN+Diag call with learnable
    mix weights (``WEIGHTED``; the average mix's passes are the same without the weights) and its block passes
    with attention ``dropout``, as in training, and for a masked cheap linear attention call; passes
    that reduce over the sequence in both forms (``ATOMIC``: several programs per (batch, head), or one)."""
    plan, half, stages = functions.launch_plan(head_dim, head_dim), dtype != "fp32", functions.PIPELINE_STAGES
    dims, row = {"D": head_dim, "DV": head_dim}, plan.rows
    return [
        ("lln_stats_kernel", {"D": head_dim, "BLOCK": row, "HAS_MASK": True, "MASKED_MOMENTS": True}, plan.warps_stats, stages),
        ("lln_prologue_kernel", {**dims, "BLOCK": plan.rows_prologue, "HAS_MASK": True, "HALF": half}, plan.warps_prologue, stages),
        ("lln_state_kernel", {**dims, "BLOCK": row, "HAS_MASK": True, "HALF": half, "ATOMIC": True}, plan.warps, stages),
        ("lln_output_kernel", {**dims, "BLOCK": row, "HAS_MASK": True, "HAS_DIAG": False, "WEIGHTED": False, "HALF": half, "DROPOUT": False}, plan.warps, stages),
        ("lln_output_kernel", {**dims, "BLOCK": block, "HAS_MASK": True, "HAS_DIAG": True, "WEIGHTED": True, "HALF": half, "DROPOUT": dropout}, plan.warps_diag, plan.stages_diag),
        ("lln_backward_query_kernel", {**dims, "BLOCK": row, "HAS_DIAG": True, "WEIGHTED": True, "HALF": half, "ATOMIC": True}, plan.warps_query, plan.stages_query),
        ("lln_backward_query_kernel", {**dims, "BLOCK": row, "HAS_DIAG": True, "WEIGHTED": True, "HALF": half, "ATOMIC": False}, plan.warps_query, plan.stages_query),
        ("lln_backward_unsplit_kernel", {**dims, "BLOCK": plan.rows_backward_unsplit, "HAS_MASK": True, "HAS_DIAG": True, "WEIGHTED": True, "HALF": half}, plan.warps_backward_unsplit, plan.stages_query),
        ("lln_backward_block_kernel", {**dims, "BLOCK": block, "HAS_MASK": True, "WEIGHTED": True, "HALF": half, "DROPOUT": dropout, "ADD_KEYS": True}, plan.warps_diag_backward, functions.block_backward_stages(plan, block)),
        ("lln_backward_key_kernel", {**dims, "BLOCK": row, "HAS_MASK": True, "ACCUMULATE": True, "HALF": half}, plan.warps, stages),
        ("cheap_state_kernel", {**dims, "BLOCK": row, "HAS_MASK": True, "HALF": half, "ATOMIC": True}, plan.warps, stages),
        ("cheap_output_kernel", {**dims, "BLOCK": row, "HALF": half}, plan.warps, stages),
        ("cheap_backward_query_kernel", {**dims, "BLOCK": row, "HALF": half, "ATOMIC": True}, plan.warps_query, stages),
        ("cheap_backward_key_kernel", {**dims, "BLOCK": row, "HAS_MASK": True, "HALF": half}, plan.warps, stages),
    ]  # fmt: skip


def signature(fn, dtype: str, constexprs: dict) -> dict[str, str]:
    # the key padding mask as the launchers pass it (``functions.key_mask``, ``functions._byte_mask``)
    mask_type = "*u8" if fn.fn.__name__ == "lln_backward_unsplit_kernel" else "*i32"
    types = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in constexprs:
            types[name] = "constexpr"
        elif name == "SEED":
            types[name] = "*i64"
        elif name.isupper():
            types[name] = (
                mask_type if name == "MASK" else "*fp32" if name in FLOAT32_POINTERS else f"*{dtype}"
            )
        else:
            types[name] = "fp32" if name in FLOAT_SCALARS else "i32"
    return types


def resources(name: str, dtype: str, constexprs: dict, warps: int, stages: int) -> dict[str, int]:
    """Registers per thread, spilled bytes (stores) and shared memory of one compiled kernel."""
    fn = getattr(kernels, name) if hasattr(kernels, name) else getattr(cheap_linear, name)
    types = signature(fn, dtype, constexprs)
    positions = {(list(types).index(key),): value for key, value in constexprs.items()}
    # What the launcher tells the compiler of real arguments, at its most specialised (aligned tensors,
    # every integer a multiple of 16, as for seq 512): with it, Triton pipelines loads into
    # multi-buffered shared memory, so this is the launch that needs the most.
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, kind in enumerate(types.values())
        if kind not in ("fp32", "constexpr")
    }
    compiled = triton.compile(
        ASTSource(fn, types, constexprs=positions, attrs=aligned),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "num_stages": stages},
    )
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        report = subprocess.run(
            [ptxas, "-v", "--gpu-name=sm_90a", ptx.name, "-o", os.devnull], capture_output=True, text=True
        ).stderr
    return {
        "registers": int(re.search(r"Used (\d+) registers", report).group(1)),
        "spill_bytes": int(re.search(r"(\d+) bytes spill stores", report).group(1)),
        "shared_kib": compiled.metadata.shared // 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--block", type=int, default=64, help="diagonal block (a power of two)")
    parser.add_argument("--no_dropout", action="store_true", help="LLN+Diag block passes without dropout")
    args = parser.parse_args(argv)
    print(
        "| kernel | tile rows | warps | stages | registers | spill bytes | shared KiB |\n" + "|---" * 7 + "|"
    )
    for name, constexprs, warps, stages in kernel_specs(
        args.dtype, args.head_dim, args.block, not args.no_dropout
    ):
        found = resources(name, args.dtype, constexprs, warps, stages)
        print(
            f"| {name} | {constexprs['BLOCK']} | {warps} | {stages} | {found['registers']} | "
            f"{found['spill_bytes']} | {found['shared_kib']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
