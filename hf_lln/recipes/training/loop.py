"""The training loop shared by the scripts: accumulation, logging, evaluation, checkpoints, exact resume.

Exact resume rests on three things: the data order of epoch ``e`` depends only on ``(seed, e)``
(accelerate's seedable sampler); a resumed run skips the batches the checkpoint had consumed
(``skip_first_batches``) instead of re-reading them; and the global torch RNG is re-seeded before
every batch from ``(seed, batch number, process)``, so dropout and anything a ``compute_loss``
draws (MLM masking) are the same whether or not the run was interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from hf_lln.recipes.training.checkpoint import (
    TrainingProgress,
    load_checkpoint,
    model_fingerprint,
    run_arguments,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

Batch = Mapping[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """How long the run is: ``max_train_steps`` optimizer steps over at most ``num_epochs`` epochs."""

    max_train_steps: int
    num_epochs: int
    steps_per_epoch: int


@dataclasses.dataclass
class TrainingSummary:
    """What :func:`train` did in this invocation (a resumed run counts only its own steps and time).

    ``log_history``: one entry per log (``step``, ``train_loss``, ``learning_rate``) and per
    evaluation (``step``, ``eval_<metric>``), in order.
    """

    completed_steps: int
    epochs: float
    train_loss: float
    train_runtime: float
    train_tokens: int
    tokens_per_second: float
    eval_metrics: dict[str, float]
    log_history: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def results(self) -> dict[str, float]:
        """Flat metrics for ``all_results.json``: ``train_*``, ``tokens_per_second`` and ``eval_*``."""
        return {
            "train_steps": self.completed_steps,
            "epochs": self.epochs,
            "train_loss": self.train_loss,
            "train_runtime": self.train_runtime,
            "train_tokens": self.train_tokens,
            "tokens_per_second": self.tokens_per_second,
            **{f"eval_{key}": value for key, value in self.eval_metrics.items()},
        }


def plan_training(args: argparse.Namespace, batches_per_epoch: int) -> TrainingPlan:
    """Resolve ``--max_train_steps``/``--num_train_epochs`` for a prepared dataloader of ``batches_per_epoch``.

    Call it after ``accelerator.prepare`` (the per-process length is what counts) and before building
    the scheduler, which needs ``max_train_steps``.
    """
    if batches_per_epoch == 0:
        raise ValueError(
            "the training data gives no batch per process: use more data or a smaller --per_device_train_batch_size"
        )
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        return TrainingPlan(args.num_train_epochs * steps_per_epoch, args.num_train_epochs, steps_per_epoch)
    return TrainingPlan(
        args.max_train_steps, math.ceil(args.max_train_steps / steps_per_epoch), steps_per_epoch
    )


def batch_seed(seed: int, micro_batch: int, process_index: int) -> int:
    """Seed of the global RNG for one batch: a hash of (run seed, batch number, process)."""
    return int(
        np.random.SeedSequence([seed, micro_batch, process_index]).generate_state(1, np.uint64)[0] >> 1
    )


def model_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Default ``compute_loss``: the model's own loss from ``model(**batch)``."""
    return model(**batch).loss


def training_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batch: Batch,
    compute_loss: Callable[[torch.nn.Module, Batch], torch.Tensor],
    max_grad_norm: float,
) -> torch.Tensor:
    """One micro-batch of training, as :func:`train` runs it: ``compute_loss(model, batch)``, backward,
    and, once ``--gradient_accumulation_steps`` micro-batches are in, gradient clipping to
    ``max_grad_norm`` (0: none), the optimizer and scheduler steps and zeroed gradients. Returns the
    scalar loss (its graph already freed by the backward).

    Everything must already be ``accelerator.prepare``-d; ``accelerator.accumulate`` skips DDP's gradient
    reduction on the micro-batches that do not step, and accelerate's prepared optimizer skips its step
    and zeroing there. ``hf_lln.experiments.mlm_throughput`` times this very function, so what it measures is
    what training runs.
    """
    with accelerator.accumulate(model):
        loss = compute_loss(model, batch)
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if accelerator.sync_gradients:
            scheduler.step()
        optimizer.zero_grad()
    return loss


def count_tokens(batch: Batch) -> int:
    """Default token count of a batch: real tokens by ``attention_mask``, else every ``input_ids`` entry."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel()


def train(
    accelerator: Accelerator,
    args: argparse.Namespace,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    train_dataloader,
    plan: TrainingPlan,
    *,
    compute_loss: Callable[[torch.nn.Module, Batch], torch.Tensor] = model_loss,
    evaluate: Callable[[], dict[str, float]] | None = None,
    tokens_in: Callable[[Batch], int] = count_tokens,
    data_fingerprint: str | None = None,
) -> TrainingSummary:
    """Train ``plan.max_train_steps`` optimizer steps; every object must already be ``accelerator.prepare``-d.

    Resumes from ``args.resume_from_checkpoint`` (a path resolved by ``check_training_arguments``),
    saves ``output_dir/step_N`` every ``args.checkpointing_steps``, logs the mean training loss and
    learning rate every ``args.logging_steps``, and calls ``evaluate()`` (which must return metric
    floats and may switch the model to eval mode) every ``args.eval_steps`` steps or, without it,
    after every epoch, and once more at the end unless the last step just evaluated.

    Checkpoints record the run's identity: its run-defining arguments (``checkpoint.run_arguments(args)``)
    and ``data_fingerprint`` (``checkpoint.data_fingerprint`` of the training data, or None); resuming
    from a checkpoint of another identity raises ``ValueError`` naming what differs.
    """
    output_dir = Path(args.output_dir)
    fingerprint = model_fingerprint(accelerator.unwrap_model(model))
    run = {"arguments": run_arguments(args), "data": data_fingerprint}
    progress = TrainingProgress()
    if args.resume_from_checkpoint is not None:
        progress = load_checkpoint(accelerator, Path(args.resume_from_checkpoint), fingerprint, run)
    start_step = progress.completed_steps

    logger.info(
        "training: %d steps (%d per epoch), %d processes x %d per device x %d accumulation",
        plan.max_train_steps,
        plan.steps_per_epoch,
        accelerator.num_processes,
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
    )
    bar = tqdm(
        total=plan.max_train_steps,
        initial=start_step,
        desc="train",
        disable=not accelerator.is_local_main_process,
    )
    eval_metrics: dict[str, float] = {}
    evaluated_at = -1
    log_history = progress.log_history

    def run_evaluation() -> None:
        nonlocal eval_metrics, evaluated_at
        eval_metrics = evaluate()
        evaluated_at = progress.completed_steps
        logger.info("step %d: %s", progress.completed_steps, _format(eval_metrics))
        accelerator.log(
            {f"eval/{key}": value for key, value in eval_metrics.items()}, step=progress.completed_steps
        )
        log_history.append(
            {"step": progress.completed_steps, **{f"eval_{k}": v for k, v in eval_metrics.items()}}
        )
        model.train()

    device = accelerator.device
    window_loss = torch.zeros((), device=device)
    window_batches = 0
    run_loss = torch.tensor(progress.loss_sum, device=device)
    run_batches = progress.loss_batches

    model.train()
    while progress.completed_steps < plan.max_train_steps and progress.epoch < plan.num_epochs:
        train_dataloader.set_epoch(progress.epoch)
        batches = (
            accelerator.skip_first_batches(train_dataloader, progress.batches_in_epoch)
            if progress.batches_in_epoch
            else train_dataloader
        )
        tick = time.perf_counter()
        for batch in batches:
            torch.manual_seed(batch_seed(args.seed, progress.micro_batches, accelerator.process_index))
            loss = training_step(
                accelerator, model, optimizer, scheduler, batch, compute_loss, args.max_grad_norm
            )
            progress.batches_in_epoch += 1
            progress.micro_batches += 1
            window_loss += loss.detach()
            window_batches += 1
            progress.tokens += tokens_in(batch)
            if not accelerator.sync_gradients:
                continue

            progress.completed_steps += 1
            bar.update(1)
            step = progress.completed_steps
            if step % args.logging_steps == 0 or step == plan.max_train_steps:
                mean_loss = accelerator.reduce(window_loss / window_batches, reduction="mean").item()
                run_loss += window_loss
                run_batches += window_batches
                window_loss.zero_()
                window_batches = 0
                lr = scheduler.get_last_lr()[0]
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
                accelerator.log({"train/loss": mean_loss, "train/learning_rate": lr}, step=step)
                log_history.append({"step": step, "train_loss": mean_loss, "learning_rate": lr})
            progress.train_seconds += time.perf_counter() - tick
            epoch_done = progress.batches_in_epoch == len(train_dataloader)
            if epoch_done:
                progress.epoch += 1
                progress.batches_in_epoch = 0
            # evaluate before checkpointing, so that a run resumed from this step has this evaluation in
            # its history (every step reseeds the RNG, so evaluating first changes no training step)
            if evaluate is not None and (
                step % args.eval_steps == 0 if args.eval_steps is not None else epoch_done
            ):
                run_evaluation()
            if (args.checkpointing_steps == "epoch" and epoch_done) or (
                isinstance(args.checkpointing_steps, int) and step % args.checkpointing_steps == 0
            ):
                progress.loss_sum = (run_loss + window_loss).item()
                progress.loss_batches = run_batches + window_batches
                save_checkpoint(accelerator, output_dir, progress, fingerprint, run)
            if step >= plan.max_train_steps:
                break
            tick = time.perf_counter()
    bar.close()

    if evaluate is not None and evaluated_at != progress.completed_steps:
        run_evaluation()
    run_loss += window_loss
    run_batches += window_batches
    train_loss = accelerator.reduce(run_loss / max(run_batches, 1), reduction="mean").item()
    total_tokens = int(
        accelerator.reduce(torch.tensor(progress.tokens, device=device), reduction="sum").item()
    )
    runtime = accelerator.reduce(torch.tensor(progress.train_seconds, device=device), reduction="mean").item()
    return TrainingSummary(
        completed_steps=progress.completed_steps,
        epochs=progress.completed_steps / plan.steps_per_epoch,
        train_loss=train_loss,
        train_runtime=runtime,
        train_tokens=total_tokens,
        tokens_per_second=total_tokens / runtime if runtime > 0 else 0.0,
        eval_metrics=eval_metrics,
        log_history=log_history,
    )


def _format(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{key} {value:.4g}" for key, value in metrics.items())
