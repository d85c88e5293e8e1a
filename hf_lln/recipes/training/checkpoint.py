"""Resumable checkpoints: atomic folders of accelerate state plus the position in the data.

A checkpoint is ``output_dir/step_N``: accelerate's ``save_state`` (model as safetensors, optimizer,
scheduler, gradient scaler, RNG states) and ``training_state.json`` (the :class:`TrainingProgress`,
the world size and a fingerprint of the model). It is first written to ``output_dir/.step_N.tmp``
and renamed once complete, so a run killed while saving never leaves a half-written ``step_N``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
WRAPPER_COMPONENTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})


@dataclasses.dataclass
class TrainingProgress:
    """Where a run stands.

    ``completed_steps``: optimizer steps done; ``epoch``: the epoch being read; ``batches_in_epoch``:
    batches of that epoch already consumed (per process); ``micro_batches``: batches consumed since
    the start of the run, which seeds the RNG of each step. The rest is what the run's summary is made
    of, so that a resumed run reports the whole run: ``log_history`` (the logged and evaluated entries
    so far), ``loss_sum`` / ``loss_batches`` (the training loss summed over the batches so far),
    ``tokens`` and ``train_seconds`` (the main process's, as the checkpoint's writer).
    """

    completed_steps: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    micro_batches: int = 0
    log_history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    loss_sum: float = 0.0
    loss_batches: int = 0
    tokens: int = 0
    train_seconds: float = 0.0


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of every parameter's name and shape: equal for the same architecture.

    Names are taken without the prefixes that wrappers add (DDP, FSDP, activation checkpointing,
    ``torch.compile``), so a model hashes the same before and after ``accelerator.prepare``.
    """
    signature = [f"{_unwrapped_name(name)}:{tuple(p.shape)}" for name, p in model.state_dict().items()]
    return hashlib.sha256("\n".join(signature).encode()).hexdigest()[:16]


def _unwrapped_name(name: str) -> str:
    parts = [part for part in name.split(".") if part not in WRAPPER_COMPONENTS]
    if parts[0] == "module":  # DistributedDataParallel
        parts = parts[1:]
    return ".".join(parts)


def checkpoint_step(path: Path) -> int | None:
    """N for a complete checkpoint folder ``step_N``, else None."""
    match = CHECKPOINT_PATTERN.match(path.name)
    if match is None or not (path / STATE_FILE).is_file():
        return None
    return int(match.group(1))


def find_checkpoint(resume_from_checkpoint: str, output_dir: Path) -> Path:
    """Resolve ``--resume_from_checkpoint``: a folder path, or ``"latest"`` (newest ``step_N`` in ``output_dir``)."""
    if resume_from_checkpoint == "latest":
        found = (
            [p for p in output_dir.glob("step_*") if checkpoint_step(p) is not None]
            if output_dir.is_dir()
            else []
        )
        if not found:
            raise ValueError(
                f"--resume_from_checkpoint latest: no complete checkpoint (step_N/{STATE_FILE}) in {output_dir}"
            )
        return max(found, key=checkpoint_step)
    path = Path(resume_from_checkpoint)
    if not (path / STATE_FILE).is_file():
        raise ValueError(
            f"--resume_from_checkpoint {path}: not a checkpoint folder (expected {path / STATE_FILE}); "
            'pass a step_N folder written by --checkpointing_steps, or "latest"'
        )
    return path


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, progress: TrainingProgress, fingerprint: str
) -> Path:
    """Write ``output_dir/step_N`` atomically (every process must call this); return its path."""
    final = output_dir / f"step_{progress.completed_steps}"
    staging = output_dir / f".{final.name}.tmp"
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    # save_state returns without a barrier: every process writes its own RNG state into staging, and
    # renaming before the slowest has done so would leave that file behind in a re-created staging folder
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {
            "progress": dataclasses.asdict(progress),
            "num_processes": accelerator.num_processes,
            "model_fingerprint": fingerprint,
        }
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def check_checkpoint_model(path: Path, fingerprint: str) -> dict:
    """Raise ``ValueError`` unless the checkpoint at ``path`` was written for a model of ``fingerprint``.

    Scripts may call it as soon as the model is built, to fail before preparing data; returns the
    checkpoint's training state.
    """
    state = json.loads((Path(path) / STATE_FILE).read_text())
    if state["model_fingerprint"] != fingerprint:
        raise ValueError(
            f"--resume_from_checkpoint {path}: the checkpoint was written for another model "
            f"(fingerprint {state['model_fingerprint']}, this model {fingerprint}); "
            "use the same --config_name/--model_name_or_path and tokenizer as the run that wrote it"
        )
    return state


def load_checkpoint(accelerator: Accelerator, path: Path, fingerprint: str) -> TrainingProgress:
    """Restore accelerate's state from ``path`` and return the progress to continue from.

    Raises ``ValueError`` when the checkpoint was written for another model architecture.
    """
    state = check_checkpoint_model(path, fingerprint)
    if state["num_processes"] != accelerator.num_processes:
        logger.warning(
            "checkpoint %s was written by %d processes, resuming with %d: data order will not match exactly",
            path,
            state["num_processes"],
            accelerator.num_processes,
        )
    accelerator.load_state(str(path))
    logger.info("resumed from %s", path)
    return TrainingProgress(**state["progress"])
