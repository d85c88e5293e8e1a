"""The one decision per call between the fused GPU kernels (``hf_lln.ops.triton``) and the PyTorch paths.

``HF_LLN_KERNELS`` (environment, read when this module is imported) or the ``use_kernels`` context manager picks
the mode: ``"auto"`` (default) uses the fused kernels where they support the call and PyTorch elsewhere;
``"triton"`` requires them (an unsupported call raises); ``"torch"`` never uses them.

Each public operator validates its inputs, then calls :func:`choose_backend` once and runs that backend's
implementation directly, so no part of a call decides again. :func:`explain_backend` tells a user which path a
call would take and why; the choice is also logged at DEBUG level (``logging.getLogger("hf_lln.ops.dispatch")``)
outside of ``torch.compile``.

The mode is a plain module global rather than a context variable: ``torch.compile`` reads a global as a guarded
constant, whereas ``ContextVar.get`` breaks the graph. ``use_kernels`` is therefore process-wide, not per thread.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from hf_lln.ops._checks import check_choice

# The remote-code copy of a saved model carries no kernels (``hf_lln.remote_code``): there this import fails.
try:
    from hf_lln.ops import triton as triton_kernels
except ImportError:
    triton_kernels = None

KERNEL_MODES = ("auto", "triton", "torch")
KERNELS_ENV = "HF_LLN_KERNELS"

logger = logging.getLogger(__name__)

_env_mode = os.environ.get(KERNELS_ENV, "auto")
check_choice(KERNELS_ENV, _env_mode, KERNEL_MODES)
_forced_mode: str | None = None


def kernel_mode() -> str:
    """The mode in force: ``use_kernels``'s if inside one, else ``HF_LLN_KERNELS``'s, else ``"auto"``."""
    return _forced_mode or _env_mode


@contextlib.contextmanager
def use_kernels(mode: str):
    """``with use_kernels("torch"): ...`` forces one path inside the block (process-wide)."""
    global _forced_mode
    check_choice("mode", mode, KERNEL_MODES)
    previous, _forced_mode = _forced_mode, mode
    try:
        yield
    finally:
        _forced_mode = previous


def explain_backend(
    variant: str, q, k, v, mask=None, *, causal: bool = False, dropout_p: float = 0.0, block_size=None
) -> tuple[str, str]:
    """``(backend, reason)``: the path ``variant``'s operator takes for these inputs (``"triton"`` or
    ``"torch"``) and why. Raises ``RuntimeError`` where ``HF_LLN_KERNELS=triton`` cannot be honoured."""
    mode = kernel_mode()
    if mode == "torch":
        return "torch", f"{KERNELS_ENV}=torch"
    if mode == "auto" and not q.is_cuda:
        return "torch", f"inputs on {q.device.type}, the fused kernels need CUDA"
    if triton_kernels is None:
        reason = "this copy of hf_lln carries no fused kernels"
    else:
        reason = triton_kernels.unsupported_reason(
            variant, q, k, v, mask, causal=causal, dropout_p=dropout_p, block_size=block_size
        )
    if reason is None:
        return "triton", "the fused kernels support this call"
    if mode == "triton":
        raise RuntimeError(
            f"{KERNELS_ENV}=triton but the fused {variant} kernels cannot run this call: {reason}"
        )
    return "torch", reason


def choose_backend(
    variant: str, q, k, v, mask=None, *, causal: bool = False, dropout_p: float = 0.0, block_size=None
) -> str:
    """``"triton"`` or ``"torch"`` for one call of ``variant``'s operator on validated inputs."""
    backend, reason = explain_backend(
        variant, q, k, v, mask, causal=causal, dropout_p=dropout_p, block_size=block_size
    )
    if not torch.compiler.is_compiling() and logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s: %s path (%s)", variant, backend, reason)
    return backend
