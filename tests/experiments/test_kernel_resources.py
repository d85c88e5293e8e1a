"""hf_lln.experiments.kernel_resources: the fused kernels compiled for sm_90 on the CPU, through Triton's ptxas."""

from __future__ import annotations

import importlib

import pytest

pytest.importorskip("triton")


H100_SHARED_KIB = 227


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("hf_lln.experiments.kernel_resources")


@pytest.mark.slow
@pytest.mark.parametrize("head_dim", [64, 128])
def test_row_tile_passes_fit_the_register_file_without_spilling(script, head_dim):
    """The passes over row tiles never spill, and at head size 64 leave room for two 4-warp programs per SM (64K
    registers): the design of docs/kernels.md rests on it. (At 128 the four-times larger state takes 8 warps, one
    program per SM.) One measured exception: the whole backward of a (batch, head) in one program spills 104 bytes
    at head size 64 and 4 warps, and ran faster that way on an H200 than without spills at 8 warps (0.84 against
    1.30 ms a call), so it may spill that much and no more."""
    spill_allowed = {"lln_backward_unsplit_kernel": 104 if head_dim == 64 else 0}
    plan = script.functions.launch_plan(head_dim, head_dim)
    row_kernels = [
        spec
        for spec in script.kernel_specs("bf16", head_dim, 64)
        if spec[1]["BLOCK"] in (plan.rows, plan.rows_prologue)
    ]
    assert len(row_kernels) == 12
    for name, constexprs, warps, stages in row_kernels:
        found = script.resources(name, "bf16", constexprs, warps, stages)
        assert found["spill_bytes"] <= spill_allowed.get(name, 0), (name, found)
        if head_dim == 64:
            assert found["registers"] * warps * 32 * 2 <= 65536, (name, found)


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "head_dim"), [("fp32", 64), ("bf16", 64), ("bf16", 128), ("fp16", 128)])
def test_largest_supported_tiles_fit_in_shared_memory(script, dtype, head_dim):
    """Every kernel compiles within the H100's 227 KiB of shared memory per block with the widest
    diagonal block that ``supports`` lets through for the dtype (a kernel over it fails at launch)."""
    from hf_lln.ops import triton as fused

    block = fused.MAX_FLOAT32_BLOCK_SIZE if dtype == "fp32" else fused.MAX_BLOCK_SIZE
    for name, constexprs, warps, stages in script.kernel_specs(dtype, head_dim, block):
        found = script.resources(name, dtype, constexprs, warps, stages)
        assert found["shared_kib"] <= H100_SHARED_KIB, (name, found)


def test_pipelined_block_passes_of_128_would_not_fit(script):
    """Why the plan for heads of 128 runs the block passes in one stage, and float32 heads of 128 go to
    PyTorch: with Triton's default three stages, or in float32, they need more than the H100 has."""
    specs = {s[0]: s for s in script.kernel_specs("bf16", 128, 128)}
    name, constexprs, warps, stages = specs["lln_backward_block_kernel"]
    assert stages == 1
    assert script.resources(name, "bf16", constexprs, warps, 3)["shared_kib"] > H100_SHARED_KIB
    name, constexprs, warps, stages = next(s for s in script.kernel_specs("fp32", 128, 64) if "query" in s[0])
    assert script.resources(name, "fp32", constexprs, warps, stages)["shared_kib"] > H100_SHARED_KIB
