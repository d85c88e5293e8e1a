"""Input validation shared by the operators: every check runs before any work and names the argument."""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the operators accumulate in: float32 for half precision, the input dtype otherwise."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def check_tensor(name: str, tensor, ndim: int, layout: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != ndim:
        raise ValueError(
            f"{name} must have shape {layout}, got a {tensor.dim()}-d tensor of shape {tuple(tensor.shape)}"
        )
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def check_mask(mask, batch: int, seq: int, device: torch.device) -> None:
    """``mask: (batch, seq)`` bool, True for a real token."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(
            f"mask must be a bool tensor of shape (batch, seq) = ({batch}, {seq}), True = real token; got {got}"
        )
    if not torch.jit.is_tracing() and tuple(mask.shape) != (batch, seq):
        raise ValueError(f"mask must have shape (batch, seq) = ({batch}, {seq}), got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"mask must be on the device of q ({device}), got {mask.device}")


def check_qkv(q, k, v, mask=None) -> None:
    """``q, k: (batch, heads, seq, head_dim)``, ``v: (batch, heads, seq, v_dim)``, same dtype and device."""
    layout = "(batch, heads, seq, head_dim)"
    check_tensor("q", q, 4, layout)
    check_tensor("k", k, 4, layout)
    check_tensor("v", v, 4, "(batch, heads, seq, v_dim)")
    if torch.jit.is_tracing():
        # A tracer (the legacy ONNX exporter) records sizes as tensors: comparing them would only warn, and the
        # traced graph is checked by its own tools.
        return
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v must have shape (batch, heads, seq, v_dim) with (batch, heads, seq) = {tuple(q.shape[:3])}, got {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    check_mask(mask, q.shape[0], q.shape[2], q.device)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_positive_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def check_dropout(dropout_p) -> None:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")


def check_scale(scale) -> None:
    if scale is not None:
        check_positive_float("scale", scale)


def default_scale(scale: float | None, head_dim: int) -> float:
    return head_dim**-0.5 if scale is None else float(scale)
