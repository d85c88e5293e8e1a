"""``hf_lln.ops.triton.launch``: a launch skips Triton's per-call work only where Triton would pick the same
compiled kernel.

On the CPU a stand-in for Triton's launch path and compiled kernel records which path each launch takes; on a GPU
(``gpu``) the fused operators run both paths for real.
"""

from __future__ import annotations

import types

import pytest
import torch

triton = pytest.importorskip("triton")
launch_module = pytest.importorskip("hf_lln.ops.triton.launch")
if launch_module.knobs is None:
    pytest.skip("this Triton has no knobs module: every launch goes through Triton", allow_module_level=True)

import triton.language as tl  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402


def _toy(X, Y, n, scale, BLOCK: tl.constexpr, FLAG: tl.constexpr = False):
    pass


class _Compiled:
    """Stands in for Triton's CompiledKernel: records direct launches."""

    def __init__(self, calls):
        self.function, self.packed_metadata, self.calls = object(), object(), calls

    def run(self, *args):
        self.calls.append(("direct", args))


@pytest.fixture
def toy(monkeypatch):
    """``(kernel, calls)``: a JITFunction whose Triton launches are recorded as ("triton", args, meta)."""
    kernel = JITFunction(_toy)
    calls = []

    def triton_run(*args, grid, warmup, **meta):
        calls.append(("triton", args, meta))
        return _Compiled(calls)

    kernel.run = triton_run
    stub_driver = types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device: 1234)
    monkeypatch.setattr(launch_module, "driver", types.SimpleNamespace(active=stub_driver))
    yield kernel, calls
    launch_module._kernels.pop(kernel, None)


def _paths(calls):
    return [call[0] for call in calls]


def test_a_repeated_launch_calls_the_compiled_kernel_with_triton_arguments(toy):
    kernel, calls = toy
    x, y = torch.zeros(64), torch.zeros(64)
    launch_module.launch(kernel, (3, 2), x, y, 64, 0.5, BLOCK=16, num_warps=4)
    launch_module.launch(kernel, (3, 2), x, y, 64, 0.5, BLOCK=16, num_warps=4)
    assert _paths(calls) == ["triton", "direct"]
    # grid padded to three, the current stream, the kernel's handles, no launch metadata or hooks, then every
    # parameter in declaration order: the runtime arguments, BLOCK, and FLAG's default
    direct = calls[1][1]
    assert direct[:4] == (3, 2, 1, 1234)
    assert direct[6:9] == (None, None, None)
    assert direct[9:] == (x, y, 64, 0.5, 16, False)


@pytest.mark.parametrize(
    "change",
    ["scalar", "unaligned tensor", "dtype", "constexpr", "launch option", "device"],
)
def test_anything_triton_specialises_on_goes_through_triton_again(toy, monkeypatch, change):
    kernel, calls = toy
    x, y = torch.zeros(64), torch.zeros(64)
    args, meta = [x, y, 64, 0.5], {"BLOCK": 16, "num_warps": 4}
    launch_module.launch(kernel, (1,), *args, **meta)
    if change == "scalar":
        args[2] = 48
    elif change == "unaligned tensor":
        args[0] = torch.zeros(65)[1:]  # 4 bytes past a 16-byte boundary
    elif change == "dtype":
        args[1] = torch.zeros(64, dtype=torch.float64)
    elif change == "constexpr":
        meta["FLAG"] = True
    elif change == "launch option":
        meta["num_warps"] = 8
    else:
        stub = types.SimpleNamespace(get_current_device=lambda: 1, get_current_stream=lambda device: 99)
        monkeypatch.setattr(launch_module, "driver", types.SimpleNamespace(active=stub))
    launch_module.launch(kernel, (1,), *args, **meta)
    launch_module.launch(kernel, (1,), *args, **meta)
    assert _paths(calls) == ["triton", "triton", "direct"]


def test_new_data_of_the_same_layout_launches_directly(toy):
    kernel, calls = toy
    launch_module.launch(kernel, (1,), torch.zeros(64), torch.zeros(64), 64, 0.5, BLOCK=16)
    x, y = torch.ones(64), torch.ones(64)
    launch_module.launch(kernel, (1,), x, y, 64, 0.5, BLOCK=16)
    assert _paths(calls) == ["triton", "direct"]
    assert calls[1][1][9:11] == (x, y)


def test_a_call_without_a_tensor_where_the_first_had_one_goes_through_triton(toy):
    kernel, calls = toy
    x, y = torch.zeros(64), torch.zeros(64)
    launch_module.launch(kernel, (1,), x, y, 64, 0.5, BLOCK=16)
    launch_module.launch(kernel, (1,), x, None, 64, 0.5, BLOCK=16)
    assert _paths(calls) == ["triton", "triton"]


def test_launch_hooks_keep_every_launch_on_triton_path(toy, monkeypatch):
    kernel, calls = toy
    x, y = torch.zeros(64), torch.zeros(64)
    runtime = launch_module.knobs.runtime
    hook = runtime.launch_enter_hook
    if hasattr(hook, "calls"):
        monkeypatch.setattr(hook, "calls", [print])
    else:
        monkeypatch.setattr(runtime, "launch_enter_hook", print)
    for _ in range(3):
        launch_module.launch(kernel, (1,), x, y, 64, 0.5, BLOCK=16)
    assert _paths(calls) == ["triton"] * 3


def test_a_compiled_kernel_without_the_launcher_keeps_triton_path(toy):
    kernel, calls = toy

    def triton_run(*args, grid, warmup, **meta):
        calls.append(("triton", args, meta))
        return types.SimpleNamespace(run=None)  # no function or packed_metadata

    kernel.run = triton_run
    x, y = torch.zeros(64), torch.zeros(64)
    for _ in range(3):
        launch_module.launch(kernel, (1,), x, y, 64, 0.5, BLOCK=16)
    assert _paths(calls) == ["triton"] * 3


def _forward_backward(run, flat, shape, mask):
    flat = flat.detach().requires_grad_(True)
    q, k, v = flat.view(3, *shape).unbind(0)
    out = run(q, k, v, mask)
    out.float().square().sum().backward()
    return out.detach(), flat.grad


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["lln", "lln_diag", "cheap_linear"])
def test_direct_launches_compute_what_triton_launches_do(variant, monkeypatch):
    """The second call of a shape takes no launch through Triton and computes what the first did; inputs 2 bytes
    off a 16-byte boundary (another specialisation) go through Triton again and compute the same to bf16 rounding.
    A batch large enough for one program per (batch, head) on an H100 or H200 (no atomic sums) makes the repeated
    call's results equal bit for bit."""
    from hf_lln.ops import triton as fused

    run = {
        "lln": fused.fused_lln_attention,
        "lln_diag": fused.fused_lln_diag_attention,
        "cheap_linear": fused.fused_cheap_linear_attention,
    }[variant]
    first_launches = []
    original = launch_module._first_launch
    monkeypatch.setattr(
        launch_module, "_first_launch", lambda *args: (first_launches.append(args[0]), original(*args))
    )
    torch.manual_seed(0)
    shape = (64, 12, 120, 64)
    flat = torch.randn(3 * 64 * 12 * 120 * 64, device="cuda", dtype=torch.bfloat16)
    mask = torch.ones(64, 120, dtype=torch.bool, device="cuda")
    mask[1::2, 100:] = False
    first = _forward_backward(run, flat, shape, mask)
    launched = len(first_launches)
    second = _forward_backward(run, flat.clone(), shape, mask)
    assert len(first_launches) == launched
    unaligned = torch.empty(flat.numel() + 1, device="cuda", dtype=flat.dtype)[1:]
    unaligned.copy_(flat)
    assert unaligned.data_ptr() % 16 != 0
    shifted = _forward_backward(run, unaligned, shape, mask)
    assert len(first_launches) > launched
    for got, again, want in zip(second, shifted, first, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        # another compiled kernel: its loads and products may round differently, by bf16's last bit
        assert ((again.float() - want.float()).norm() / want.float().norm()).item() < 1e-2
