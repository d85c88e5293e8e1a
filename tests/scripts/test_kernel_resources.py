"""scripts/kernel_resources.py: the fused kernels compiled for sm_90 on the CPU, through Triton's ptxas."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

from tests.scripts import load_script  # noqa: E402


@pytest.fixture(scope="module")
def script():
    return load_script("kernel_resources")


@pytest.mark.slow
def test_row_tile_passes_fit_the_register_file_without_spilling(script):
    """The forward passes over 32-row tiles and the key pass never spill and leave room for two
    programs per SM (64K registers): the design of docs/kernels.md rests on it. (The LLN query pass
    of the backward spills a little at 4 warps and was still the faster setting on the H100.)"""
    row_kernels = [spec for spec in script.kernel_specs("bf16", 64, 64) if spec[1]["BLOCK"] == 32]
    assert len(row_kernels) == 5
    for name, constexprs, warps in row_kernels:
        if name == "lln_backward_query_kernel":
            continue
        found = script.resources(name, "bf16", constexprs, warps)
        assert found["spill_bytes"] == 0, (name, found)
        assert found["registers"] * warps * 32 * 2 <= 65536, (name, found)
