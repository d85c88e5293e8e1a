"""The ``encode_lookup`` suite: ``*_encode`` once per document, then ``*_lookup`` for each query count, against
recomputing softmax attention of those queries over the document with SDPA (``sdpa_recompute``)."""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F

from hf_lln import ops
from hf_lln.experiments.bench.cases import CaseRunner, no_grad_call
from hf_lln.experiments.bench.config import DTYPES, ENCODE_LOOKUP_VARIANTS
from hf_lln.experiments.bench.measure import OP_HEAD_DIM, OP_HEADS
from hf_lln.experiments.bench.ops_suite import random_heads


def encode_lookup_calls(variant: str, k: torch.Tensor, v: torch.Tensor, q_std: torch.Tensor):
    """``(encode() -> state, lookup(q, state))`` of a variant of :data:`ENCODE_LOOKUP_VARIANTS` (a fixed-size
    state); LLN's encoding takes the queries' standard deviation ``q_std``."""
    if variant == "lln":
        return functools.partial(ops.lln_encode, k, v, q_std=q_std), ops.lln_lookup
    return functools.partial(ops.cheap_linear_encode, k, v), ops.cheap_linear_lookup


def run_encode_lookup(runner: CaseRunner) -> None:
    """Each dtype and document length: encode once, look up each query count, and recompute with SDPA."""
    config = runner.config
    generator = torch.Generator(runner.device).manual_seed(config.seed)
    state_elements = OP_HEAD_DIM * OP_HEAD_DIM + 2 * OP_HEAD_DIM
    for dtype_name, seq in itertools.product(config.dtypes, config.seq_lengths):
        dtype = DTYPES[dtype_name]
        element = torch.finfo(dtype).bits // 8
        k, v = (random_heads(1, seq, dtype, runner.device, generator) for _ in range(2))
        queries_for = {m: random_heads(1, m, dtype, runner.device, generator) for m in config.queries}
        base = {
            "suite": "encode_lookup",
            "dtype": dtype_name,
            "pass": "forward",
            "seq_len": seq,
            "batch": 1,
            "tokens": seq,
        }
        for variant in [name for name in ENCODE_LOOKUP_VARIANTS if name in config.variants]:
            encode, lookup = encode_lookup_calls(
                variant, k, v, q_std=queries_for[config.queries[-1]].float().std()
            )
            case = {
                **base,
                "variant": f"{variant}_encode",
                "queries": "",
                "floor_bytes": (2 * seq * OP_HEAD_DIM + state_elements) * OP_HEADS * element,
            }
            if not runner.run_case(case, functools.partial(no_grad_call, encode, [], [k, v])):
                continue
            with torch.no_grad():
                state = encode()
            for queries, q in queries_for.items():
                case = {
                    **base,
                    "variant": f"{variant}_lookup",
                    "queries": queries,
                    "floor_bytes": (2 * queries * OP_HEAD_DIM + state_elements) * OP_HEADS * element,
                }
                runner.run_case(case, functools.partial(no_grad_call, lookup, [q, state], [q, k, v]))
        if "sdpa" in config.variants:
            for queries, q in queries_for.items():
                case = {
                    **base,
                    "variant": "sdpa_recompute",
                    "queries": queries,
                    "floor_bytes": (2 * queries + 2 * seq) * OP_HEAD_DIM * OP_HEADS * element,
                }
                recompute = F.scaled_dot_product_attention
                runner.run_case(case, functools.partial(no_grad_call, recompute, [q, k, v], [q, k, v]))
