"""The ``ops`` suite: each attention op alone on ``(batch, 12, seq, 64)``, forward and forward+backward."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hf_lln.experiments.bench.cases import Call, CaseRunner, no_grad_call
from hf_lln.experiments.bench.config import DTYPES
from hf_lln.experiments.bench.measure import OP_HEAD_DIM, OP_HEADS, op_floor_bytes
from hf_lln.models.configuration_lln import LLN_SETTINGS_DEFAULTS
from hf_lln.variants import VARIANTS


def softmax_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out: ``softmax(q k^T / sqrt(d)) v``, materialising the probabilities."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype) @ v


def op_functions(device: torch.device, seed: int) -> dict[str, Callable[..., torch.Tensor]]:
    """Every benchmarked attention op as ``fn(q, k, v) -> out`` on ``(batch, heads, seq, head_dim)``: the softmax
    rows and each registered variant with the default config's options (Performer's projection seeded ``seed``)."""
    functions = {"eager": softmax_eager, "sdpa": F.scaled_dot_product_attention}
    settings = {**LLN_SETTINGS_DEFAULTS, "lln_performer_seed": seed}
    for name, variant in VARIANTS.items():
        options = variant.options(settings, OP_HEAD_DIM, 0)
        if "projection" in options:
            options["projection"] = options["projection"].to(device)
        functions[name] = functools.partial(variant.op, **options)
    return functions


def random_heads(
    batch: int,
    seq: int,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator,
    requires_grad: bool = False,
) -> torch.Tensor:
    """A standard normal ``(batch, OP_HEADS, seq, OP_HEAD_DIM)`` tensor of ``dtype``."""
    shape = (batch, OP_HEADS, seq, OP_HEAD_DIM)
    return torch.randn(shape, generator=generator, device=device).to(dtype).requires_grad_(requires_grad)


def op_call(fn, shape, dtype, device, generator, backward: bool) -> Call:
    """``(call, resident)`` for one op case: fresh q, k, v of ``shape``; forward under no_grad, or forward and
    backward from a fixed output gradient."""
    q, k, v = (random_heads(shape[0], shape[2], dtype, device, generator, backward) for _ in range(3))
    if not backward:
        return no_grad_call(fn, [q, k, v], [q, k, v])
    grad = torch.randn_like(q)

    def forward_backward():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(grad)

    return forward_backward, [q, k, v]


def run_ops(runner: CaseRunner) -> None:
    """Every op, dtype and pass at each sequence length; after a failure, longer sequences are skipped."""
    config = runner.config
    functions = op_functions(runner.device, config.seed)
    generator = torch.Generator(runner.device).manual_seed(config.seed)
    for dtype_name, pass_name, variant in itertools.product(config.dtypes, config.passes, config.variants):
        dtype, backward = DTYPES[dtype_name], pass_name == "forward_backward"
        failed = False
        for seq in config.seq_lengths:
            batch = max(1, config.tokens_per_batch // seq)
            case = {
                "suite": "ops",
                "dtype": dtype_name,
                "variant": variant,
                "pass": pass_name,
                "seq_len": seq,
                "batch": batch,
                "tokens": batch * seq,
                "floor_bytes": op_floor_bytes(batch, seq, dtype, backward),
            }
            if failed or runner.too_big_for_cpu(variant, batch, OP_HEADS, seq, backward):
                runner.record(case, "skipped")
                continue
            shape = (batch, OP_HEADS, seq, OP_HEAD_DIM)
            make_call = functools.partial(
                op_call, functions[variant], shape, dtype, runner.device, generator, backward
            )
            failed = not runner.run_case(case, make_call)
