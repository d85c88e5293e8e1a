"""Attention transfer's step time: ms per step of each stage and variant, side by side in one run.

Times the steps ``hf_lln.transfer.transfer_attention`` runs (the layer stage's and the end-to-end stage's
``optimise`` on the batches ``text_batches`` cuts, with ``TransferSettings``' defaults) on a softmax checkpoint
converted to each variant: ``--warmup_steps`` steps, then ``--steps`` timed ones. With ``--profile`` (CUDA) it also
counts, over ``--profile_steps`` more steps, the kernel launches per step and the device time torch.profiler records
(kernels, plus the span of the optimizer step): a GPU step whose ms far exceed its device ms is bound by the host.
Every step runs the teacher, as on a transfer's first pass over its text; ``--teacher_cache`` keeps the teacher's
hidden states, as ``transfer_attention`` does by default, so that steps on texts met again skip it (warm up over the
whole text: a short ``--text`` and enough ``--warmup_steps``).

    python -m hf_lln.experiments.transfer_throughput --model_name_or_path MINILM --text wiki.txt --profile
    python -m hf_lln.experiments.transfer_throughput --model_name_or_path MINILM --steps 4 --warmup_steps 1  # CPU
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
from accelerate import Accelerator
from transformers import AutoModel, AutoTokenizer

import hf_lln
from hf_lln.experiments.bench.measure import synchronize
from hf_lln.transfer import TransferRun, TransferSettings, load_texts, text_batches
from hf_lln.transfer.loop import TEACHER_CACHE_BYTES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="softmax BERT/RoBERTa folder or Hub id")
    parser.add_argument("--text", help="transfer text (default: the bundled corpus)")
    parser.add_argument(
        "--variants", nargs="+", choices=hf_lln.ATTENTION_VARIANTS, default=["lln", "lln_diag"]
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup_steps", type=int, default=20)
    parser.add_argument(
        "--profile", action="store_true", help="kernel launches and device ms per step (CUDA)"
    )
    parser.add_argument("--profile_steps", type=int, default=4)
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None)
    parser.add_argument(
        "--teacher_cache",
        action="store_true",
        help="keep the teacher's hidden states of the texts seen (transfer_attention's default)",
    )
    args = parser.parse_args(argv)
    for name in ("steps", "profile_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        parser.error(f"--warmup_steps must be >= 0, got {args.warmup_steps}")
    return args


def device_profile(optimise, steps: int) -> tuple[float, float]:
    """(device ms, kernel launches) per step of ``optimise(steps)`` under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        optimise(steps)
        torch.cuda.synchronize()
    events = [event for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]
    device_us = sum(event.device_time_total for event in events)
    return device_us / steps / 1e3, len(events) / steps


def measure(args, accelerator: Accelerator, tokenizer, texts: list[str], variant: str) -> list[dict]:
    """One row per stage: ms per step (and with ``--profile``, device ms and launches per step)."""
    teacher = AutoModel.from_pretrained(
        args.model_name_or_path, attn_implementation="sdpa", dtype=torch.float32
    )
    student = AutoModel.from_pretrained(
        args.model_name_or_path, attn_implementation=variant, dtype=torch.float32
    )
    cache = TEACHER_CACHE_BYTES if args.teacher_cache else 0
    run = TransferRun.prepared(teacher, student, TransferSettings(), accelerator, teacher_cache_bytes=cache)
    settings = run.settings
    batches = text_batches(
        texts,
        tokenizer,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
        mixed_lengths=settings.mixed_lengths,
    )
    device = accelerator.device
    stream = run.stream(batches)
    rows = []
    for stage in run.stages():
        with stage.parameters() as groups:
            optimise = functools.partial(run.optimise, groups, stage, stream)
            if args.warmup_steps:
                optimise(args.warmup_steps)
            synchronize(device)
            start = time.perf_counter()
            optimise(args.steps)
            synchronize(device)
            row = {
                "variant": variant,
                "stage": stage.name,
                "ms": (time.perf_counter() - start) / args.steps * 1e3,
            }
            if args.profile and device.type == "cuda":
                row["device_ms"], row["launches"] = device_profile(optimise, args.profile_steps)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    source = load_texts(args.text)
    rows = [
        row
        for variant in args.variants
        for row in measure(args, accelerator, tokenizer, source.texts, variant)
    ]
    device = torch.cuda.get_device_name() if accelerator.device.type == "cuda" else "cpu"
    print(
        f"\n{args.model_name_or_path}, {source.description}, TransferSettings' batches, "
        f"{accelerator.mixed_precision}, {device}, {args.steps} timed steps after {args.warmup_steps}, teacher "
        + ("cache on" if args.teacher_cache else "run at every step")
    )
    profiled = any("launches" in row for row in rows)
    print("| variant | stage | ms / step |" + (" device ms / step | launches / step |" if profiled else ""))
    print("|---|---|---:|" + ("---:|---:|" if profiled else ""))
    for row in rows:
        extra = f" {row['device_ms']:.1f} | {row['launches']:,.0f} |" if "launches" in row else ""
        print(f"| {row['variant']} | {row['stage']} | {row['ms']:.1f} |{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
