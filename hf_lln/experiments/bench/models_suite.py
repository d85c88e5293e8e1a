"""The ``models`` suite: whole encoders (random weights) with each ``attn_implementation``."""

from __future__ import annotations

import functools
import itertools

import torch

from hf_lln.experiments.bench.cases import Call, CaseRunner, no_grad_call
from hf_lln.experiments.bench.config import DTYPES, MODEL_SIZES
from hf_lln.experiments.bench.measure import op_floor_bytes


def build_encoder(size: str, max_seq: int, dtype: torch.dtype, device: torch.device, seed: int):
    """A randomly initialised encoder (``transformers.AutoModel``) of a named size (:data:`MODEL_SIZES`) with
    room for ``max_seq`` positions; attention dropout off so every variant does the same work."""
    from transformers import AutoConfig, AutoModel

    model_type, sizes = MODEL_SIZES[size]
    # RoBERTa numbers positions from pad_token_id + 1, so it needs two spare position embeddings.
    config = AutoConfig.for_model(
        model_type, max_position_embeddings=max_seq + 2, attention_probs_dropout_prob=0.0, **sizes
    )
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, attn_implementation="sdpa", add_pooling_layer=False)
    return model.to(device=device, dtype=dtype)


def model_call(model, shape: tuple[int, int], backward: bool, seed: int) -> Call:
    """``(call, resident)`` for one model case on random token ids of ``shape = (batch, seq)``: the last hidden
    state under no_grad, or forward and backward from its mean square."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, shape, device=device, generator=generator)
    resident = [*model.parameters(), *model.buffers(), ids]
    if not backward:
        return no_grad_call(lambda: model(input_ids=ids).last_hidden_state, [], resident)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids).last_hidden_state.float().square().mean().backward()

    return forward_backward, resident


def run_models(runner: CaseRunner) -> None:
    """Every model size and dtype, each pass and attention implementation at each sequence length."""
    config = runner.config
    for size, dtype_name in itertools.product(config.model_sizes, config.dtypes):
        dtype = DTYPES[dtype_name]
        model = build_encoder(size, max(config.seq_lengths), dtype, runner.device, config.seed)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
        head_dim = model.config.hidden_size // heads
        for pass_name, variant in itertools.product(config.passes, config.variants):
            backward = pass_name == "forward_backward"
            model.train(backward)
            model.set_attn_implementation(variant)
            failed = False
            for seq in config.seq_lengths:
                batch = max(1, config.tokens_per_batch // seq)
                attention_bytes = op_floor_bytes(batch, seq, dtype, backward, heads, head_dim)
                case = {
                    "suite": "models",
                    "dtype": dtype_name,
                    "variant": variant,
                    "model": size,
                    "pass": pass_name,
                    "seq_len": seq,
                    "batch": batch,
                    "tokens": batch * seq,
                    "floor_bytes": weight_bytes * (3 if backward else 1) + layers * attention_bytes,
                }
                if failed or runner.too_big_for_cpu(variant, batch, heads, seq, backward):
                    runner.record(case, "skipped")
                    continue
                make_call = functools.partial(model_call, model, (batch, seq), backward, config.seed)
                failed = not runner.run_case(case, make_call)
                model.zero_grad(set_to_none=True)
        del model
