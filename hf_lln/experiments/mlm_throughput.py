"""MLM training throughput (tokens/s, ms per step) and peak memory per attention and sequence length;
loss-curve comparison.

Each measurement builds the preset as run_mlm.py does (``build_model``: vocabulary padded to a multiple
of 64) and trains it on random words through ``hf_lln.recipes.training.training_step``, the function run_mlm.py's
training loop calls: BERT masking drawn on the CPU every step, the loss projecting only the masked
positions onto the vocabulary, backward, gradient clipping (``--max_grad_norm``), the steps of run_mlm.py's AdamW
(``make_optimizer``: fused on CUDA) and scheduler under accelerate's mixed precision. It runs ``--warmup_steps``
steps, then times ``--steps`` steps.
``zero_cost`` is an attention that costs nothing (each token keeps its own value): a step with it is
the floor the other attentions' steps are compared with (the ``x zero_cost`` column). It leaves queries and keys
unused, so its backward pass also skips their projections (four matrix products per layer that every real
attention pays); ``zero_cost_qk`` hands them a zero gradient instead, and the ``ms over zero_cost_qk`` column is
what the attention itself costs in the step. ``sdpa`` is softmax.
With ``--find_max_seq_length`` it also doubles the length at batch size 1 until memory runs out. With
``--profile`` it runs three more steps of each row under torch.profiler and prints, per step, the device time
of every kernel summed, the number of launches, the time the GPU sat idle (wall time minus kernel time:
host-bound gaps), and the kernels that took longest. With ``--rounds N`` every row is measured N times, the
rows taking turns (round 1 of every row, then round 2, ...), and the table gives each row's median step and
every round's: on a lent GPU whose host speed drifts between minutes, rows measured side by side in turns compare
where one measurement of each, minutes apart, may not.

    python -m hf_lln.experiments.mlm_throughput --config_name lln-roberta-tiny --seq_lengths 64 --steps 2 --warmup_steps 1 \\
        --mixed_precision no --tokens_per_batch 256                                   # CPU smoke run
    python -m hf_lln.experiments.mlm_throughput --find_max_seq_length                            # one H100: base, bf16
    python -m hf_lln.experiments.mlm_throughput --attn_implementations zero_cost sdpa lln lln_diag --attention_dropout 0 \
        --seq_lengths 512 4096 16384 32768 --tokens_per_batch 32768                   # issue 8's training step

Compare the loss curves of finished run_mlm.py runs (their ``log_history.json``), e.g. 1 GPU vs 2-GPU DDP:

    python -m hf_lln.experiments.mlm_throughput --loss_curves outputs/mlm-1gpu outputs/mlm-2gpu
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AttentionInterface, AttentionMaskInterface, RobertaTokenizer, get_scheduler

from hf_lln.experiments.bench.measure import synchronize
from hf_lln.integration.attention import key_padding_mask
from hf_lln.models.configuration_lln import config_for_attention
from hf_lln.recipes.mlm import PRESETS, MaskedLanguageModeling, build_model, preset_config
from hf_lln.recipes.mlm.model import VOCABULARY_MULTIPLE
from hf_lln.recipes.training import (
    LOG_HISTORY_FILE,
    apply_memory_options,
    make_optimizer,
    training_step,
)

MASK_SHARE = 0.15
# the presets' special tokens at their ids (bos 0, pad 1, eos 2); the ids above are words
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
FIRST_WORD_ID = len(SPECIAL_TOKENS)
ZERO_COST = "zero_cost"
ZERO_COST_QK = "zero_cost_qk"
FLOORS = (ZERO_COST, ZERO_COST_QK)
# the optimizer flags of run_mlm.py's base-size command (its docstring), through the function it builds its
# optimizer with
OPTIMIZER_ARGUMENTS = argparse.Namespace(
    learning_rate=6e-4, weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8
)


def zero_cost_attention(module, query, key, value, attention_mask, **kwargs):
    """``value: (batch, heads, seq, head_dim)`` -> ``((batch, seq, heads, head_dim), None)``: each token
    keeps its own value. Queries and keys are unused, so the backward pass skips their projections too."""
    return value.transpose(1, 2), None


class _ZeroQueryKeyGradient(torch.autograd.Function):
    """``value`` in the output layout; a zero gradient for ``query`` and ``key``."""

    @staticmethod
    def forward(ctx, query, key, value):
        ctx.shapes = query.shape, key.shape
        return value.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        query_shape, key_shape = ctx.shapes
        zeros = (grad.new_zeros(shape) for shape in (query_shape, key_shape))
        return *zeros, grad.transpose(1, 2)


def zero_cost_qk_attention(module, query, key, value, attention_mask, **kwargs):
    """``zero_cost_attention`` that hands queries and keys a zero gradient, so their projections' backward runs
    as under any real attention: the step costs everything but the attention itself."""
    return _ZeroQueryKeyGradient.apply(query, key, value), None


for _name, _function in ((ZERO_COST, zero_cost_attention), (ZERO_COST_QK, zero_cost_qk_attention)):
    AttentionInterface.register(_name, _function)
    AttentionMaskInterface.register(_name, key_padding_mask)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config_name", default="lln-roberta-base", choices=PRESETS)
    parser.add_argument(
        "--attn_implementations", nargs="+", default=[ZERO_COST, ZERO_COST_QK, "sdpa", "lln", "lln_diag"]
    )
    parser.add_argument("--seq_lengths", nargs="+", type=int, default=[512, 4096])
    parser.add_argument(
        "--tokens_per_batch",
        type=int,
        default=16384,
        help="Batch size = tokens_per_batch // seq (at least 1).",
    )
    parser.add_argument(
        "--attention_dropout",
        type=float,
        default=None,
        help="attention_probs_dropout_prob for every model (default: the preset's, 0.1; the fused kernels take it).",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup_steps", type=int, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="Measure every row this many times, the rows taking turns; the table gives the median step.",
    )
    parser.add_argument("--mixed_precision", default="bf16", choices=["no", "fp16", "bf16"])
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument(
        "--max_grad_norm",
        type=float,
        default=1.0,
        help="Gradient clipping norm, as run_mlm.py's (default 1.0, its default); 0 disables.",
    )
    parser.add_argument(
        "--find_max_seq_length",
        action="store_true",
        help="Also find the longest sequence that fits at batch 1.",
    )
    parser.add_argument("--max_probe_length", type=int, default=131072)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Per-kernel device time of each row's step (torch.profiler, CUDA only), after the table.",
    )
    parser.add_argument(
        "--loss_curves", nargs="+", type=Path, help="Only compare these runs' log_history.json."
    )
    args = parser.parse_args(argv)
    if args.max_grad_norm < 0:
        parser.error(f"--max_grad_norm must be non-negative, got {args.max_grad_norm}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def word_tokenizer(vocab_size: int) -> RobertaTokenizer:
    """A tokenizer of ``vocab_size`` ids: ``SPECIAL_TOKENS`` then one word per id. The masking draws its
    ``<mask>`` id and its random replacements from it, as run_mlm.py's does from the trained tokenizer."""
    vocab = {token: token_id for token_id, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{token_id}": token_id for token_id in range(FIRST_WORD_ID, vocab_size)})
    return RobertaTokenizer(vocab=vocab, merges=[])


def random_batch(tokenizer, batch: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch as run_mlm.py's dataloader gives it: ``input_ids``, ``attention_mask`` and
    ``special_tokens_mask``, each ``(batch, seq)``; random words, no padding."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    input_ids = torch.randint(FIRST_WORD_ID, len(tokenizer), (batch, seq), generator=generator)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "special_tokens_mask": torch.zeros_like(input_ids).to(device),
    }


PROFILED_STEPS = 3
PROFILE_TOP_KERNELS = 12


def profile_steps(step: Callable[[], object], device: torch.device) -> list[str]:
    """Lines summarising ``PROFILED_STEPS`` calls of ``step`` under torch.profiler: per step, the device time of
    all kernels, their launches, the idle time (wall minus kernel time) and the longest kernels."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    synchronize(device)
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(PROFILED_STEPS):
            step()
        synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1e3 / PROFILED_STEPS
    # device events, less the spans of annotated host regions (the optimizer step's), which overlap kernels
    kernels = [
        e
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
    ]
    total: dict[str, float] = {}
    for event in kernels:
        total[event.name] = total.get(event.name, 0.0) + event.device_time_total / 1e3 / PROFILED_STEPS
    busy = sum(total.values())
    lines = [
        f"  wall {wall_ms:.1f} ms/step (profiler on), kernels {busy:.1f} ms, idle {wall_ms - busy:.1f} ms, "
        f"{len(kernels) / PROFILED_STEPS:.0f} launches"
    ]
    for name, ms in sorted(total.items(), key=lambda item: -item[1])[:PROFILE_TOP_KERNELS]:
        lines.append(f"  {ms:7.2f} ms  {name[:100]}")
    return lines


def measure(
    accelerator: Accelerator, args, tokenizer, attention: str, seq: int, batch: int, profile: bool = False
) -> dict | None:
    """Tokens/s and peak memory of training steps at (batch, seq), with ``profile`` (on CUDA) the profile's lines
    (``profile_steps``); None when it does not fit in memory."""
    config = config_for_attention(preset_config(args.config_name), attention)
    if args.attention_dropout is not None:
        config.attention_probs_dropout_prob = args.attention_dropout
    model_args = argparse.Namespace(
        model_name_or_path=None,
        attn_implementation=attention,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    model = optimizer = scheduler = step = None
    try:
        model = build_model(model_args, config, tokenizer, seq)
        apply_memory_options(model, model_args)
        optimizer = make_optimizer(model, OPTIMIZER_ARGUMENTS, accelerator.device)
        # run_mlm.py's default schedule (linear); what it costs per step does not depend on its shape
        scheduler = get_scheduler(
            "linear",
            optimizer,
            num_warmup_steps=args.warmup_steps,
            num_training_steps=args.warmup_steps + args.steps,
        )
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        model.train()
        inputs = random_batch(tokenizer, batch, seq, accelerator.device)
        objective = MaskedLanguageModeling(tokenizer, MASK_SHARE, seed=0)
        torch.manual_seed(0)  # the masks of every row are drawn from the global RNG, as in run_mlm.py
        if accelerator.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = functools.partial(
            training_step,
            accelerator,
            model,
            optimizer,
            scheduler,
            inputs,
            objective.loss,
            args.max_grad_norm,
        )
        for index in range(args.warmup_steps + args.steps):
            if index == args.warmup_steps:
                synchronize(accelerator.device)
                start = time.perf_counter()
            step()
        synchronize(accelerator.device)
        seconds = time.perf_counter() - start
        peak = (
            torch.cuda.max_memory_allocated() / 2**30 if accelerator.device.type == "cuda" else float("nan")
        )
        profiled = profile and accelerator.device.type == "cuda"
        return {
            "tokens_per_second": batch * seq * args.steps / seconds,
            "ms_per_step": seconds / args.steps * 1e3,
            "peak_gib": peak,
            "profile": profile_steps(step, accelerator.device) if profiled else [],
        }
    except torch.OutOfMemoryError:
        return None
    finally:
        # every reference to the model goes before the collection, or the next row's peak memory counts it
        del model, optimizer, scheduler, step
        accelerator.free_memory()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def longest_fitting_length(accelerator: Accelerator, args, tokenizer, attention: str) -> int | None:
    """Double the length at batch 1 from the largest of ``--seq_lengths`` until a step runs out of memory."""
    fitted = None
    seq = max(args.seq_lengths)
    probe = argparse.Namespace(**{**vars(args), "steps": 1, "warmup_steps": 1})
    while (
        seq <= args.max_probe_length and measure(accelerator, probe, tokenizer, attention, seq, 1) is not None
    ):
        fitted = seq
        seq *= 2
    return fitted


def throughput_table(args) -> None:
    # as run_mlm.py's accelerator: the training step steps the scheduler once per optimizer step
    accelerator = Accelerator(mixed_precision=args.mixed_precision, step_scheduler_with_optimizer=False)
    tokenizer = word_tokenizer(preset_config(args.config_name).vocab_size)
    device = torch.cuda.get_device_name() if accelerator.device.type == "cuda" else "cpu"
    print(
        f"{args.config_name} (vocabulary {len(tokenizer)}, rows padded to a multiple of {VOCABULARY_MULTIPLE}), "
        f"{args.mixed_precision}, {device}, {args.steps} timed steps"
    )
    # the zero-cost steps first, so every other row can be set against them
    attentions = sorted(
        args.attn_implementations, key=lambda name: FLOORS.index(name) if name in FLOORS else 2
    )
    rows = [(attention, seq) for attention in attentions for seq in args.seq_lengths]
    results: dict[tuple[str, int], list[dict]] = {row: [] for row in rows}
    out_of_memory: set[tuple[str, int]] = set()
    profiles: list[str] = []
    for round_index in range(args.rounds):
        for attention, seq in rows:
            if (attention, seq) in out_of_memory:
                continue
            batch = max(1, args.tokens_per_batch // seq)
            result = measure(
                accelerator, args, tokenizer, attention, seq, batch, profile=args.profile and round_index == 0
            )
            if result is None:
                out_of_memory.add((attention, seq))
                continue
            results[attention, seq].append(result)
            print(
                f"round {round_index + 1}: {attention}, seq {seq}: {result['ms_per_step']:.1f} ms/step",
                flush=True,
            )
            if result["profile"]:
                profiles += [f"\n{attention}, seq {seq}, batch {batch}:", *result["profile"]]
    median = {
        row: statistics.median(r["ms_per_step"] for r in found) for row, found in results.items() if found
    }
    print(
        f"| attention | seq | batch | tokens/s | ms/step | x {ZERO_COST} | ms over {ZERO_COST_QK} | peak memory (GiB) "
        "| ms/step per round |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for attention, seq in rows:
        batch = max(1, args.tokens_per_batch // seq)
        if (attention, seq) not in median:
            print(f"| {attention} | {seq} | {batch} | out of memory | | | | | |", flush=True)
            continue
        ms = median[attention, seq]
        floor, floor_qk = median.get((ZERO_COST, seq)), median.get((ZERO_COST_QK, seq))
        ratio = f"{ms / floor:.2f}" if floor is not None else ""
        over = f"{ms - floor_qk:.1f}" if floor_qk is not None else ""
        found = results[attention, seq]
        peak = max(r["peak_gib"] for r in found)
        each = ", ".join(f"{r['ms_per_step']:.1f}" for r in found)
        print(
            f"| {attention} | {seq} | {batch} | {batch * seq / ms * 1e3:,.0f} | {ms:.1f} | {ratio} | {over} | "
            f"{peak:.2f} | {each} |",
            flush=True,
        )
    if profiles:
        print(f"\nProfile of {PROFILED_STEPS} more steps per row (kernel device time per step):")
        print("\n".join(profiles), flush=True)
    if args.find_max_seq_length:
        print("\n| attention | longest sequence that trains at batch 1 |")
        print("|---|---:|")
        for attention in args.attn_implementations:
            fitted = longest_fitting_length(accelerator, args, tokenizer, attention)
            limit = "none fits" if fitted is None else str(fitted)
            if fitted is not None and fitted * 2 > args.max_probe_length:
                limit += " (probe limit)"
            print(f"| {attention} | {limit} |", flush=True)


def loss_curve_table(run_dirs: list[Path]) -> None:
    """Training loss per logged step and the evaluations of each run side by side."""
    histories = []
    for run_dir in run_dirs:
        path = run_dir / LOG_HISTORY_FILE
        if not path.is_file():
            raise SystemExit(f"--loss_curves {run_dir}: no {LOG_HISTORY_FILE} (a finished run_mlm.py run?)")
        histories.append(json.loads(path.read_text()))
    for key in ("train_loss", "eval_loss"):
        curves = [{entry["step"]: entry[key] for entry in history if key in entry} for history in histories]
        steps = sorted(set().union(*curves))
        print(f"\n| step | {' | '.join(f'{key} {run_dir}' for run_dir in run_dirs)} |")
        print("|---:|" + "---:|" * len(run_dirs))
        for step in steps:
            cells = [f"{curve[step]:.4f}" if step in curve else "" for curve in curves]
            print(f"| {step} | {' | '.join(cells)} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.loss_curves:
        loss_curve_table(args.loss_curves)
    else:
        throughput_table(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
