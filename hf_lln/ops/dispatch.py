"""Choice between the fused GPU kernels (``hf_lln.ops.triton``) and the PyTorch paths.

``HF_LLN_KERNELS`` (environment) or the ``use_kernels`` context manager picks the mode:
``"auto"`` (default) uses the fused kernels where they support the call and falls back to PyTorch elsewhere;
``"triton"`` requires them (an unsupported call raises); ``"torch"`` never uses them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from types import ModuleType

from hf_lln.ops._checks import check_choice

KERNEL_MODES = ("auto", "triton", "torch")
KERNELS_ENV = "HF_LLN_KERNELS"

_mode_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "hf_lln_kernel_mode", default=None
)


def kernel_mode() -> str:
    mode = _mode_override.get() or os.environ.get(KERNELS_ENV, "auto")
    check_choice(KERNELS_ENV, mode, KERNEL_MODES)
    return mode


@contextlib.contextmanager
def use_kernels(mode: str):
    """``with use_kernels("torch"): ...`` forces one path inside the block."""
    check_choice("mode", mode, KERNEL_MODES)
    token = _mode_override.set(mode)
    try:
        yield
    finally:
        _mode_override.reset(token)


def fused_kernels(
    q, k, v, mask, *, causal: bool, dropout_p: float, block_size: int | None = None
) -> ModuleType | None:
    """The fused-kernel module when it should run this call, else None (use the PyTorch path)."""
    mode = kernel_mode()
    if mode == "torch" or (mode == "auto" and not q.is_cuda):
        return None
    try:
        from hf_lln.ops import triton as fused
    except ImportError:
        fused = None
    supported = (
        fused is not None
        and fused.is_available()
        and fused.supports(q, k, v, mask, causal=causal, dropout_p=dropout_p, block_size=block_size)
    )
    if supported:
        return fused
    if mode == "triton":
        raise RuntimeError(
            f"{KERNELS_ENV}=triton but the fused kernels do not support this call (device {q.device}, dtype "
            f"{q.dtype}, shape {tuple(q.shape)}, causal={causal}, dropout_p={dropout_p})"
        )
    return None
