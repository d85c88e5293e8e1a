"""Resumable checkpoints: atomic folders of accelerate state plus the position in the data.

A checkpoint is ``output_dir/step_N``: accelerate's ``save_state`` (model as safetensors, optimizer,
scheduler, gradient scaler, RNG states) and ``training_state.json`` (the :class:`TrainingProgress`,
the world size, a fingerprint of the model, the run's identity and the size of every file). It is first
written to ``output_dir/.step_N.tmp`` and renamed once complete, so a run killed while saving never
leaves a half-written ``step_N``; a file cut short or lost later is caught by its recorded size.

The run's identity (``run``) is what makes a resume continue *this* run and not another one that used
the same folder: ``arguments``, every argument that defines the run (:func:`run_arguments`: all but
those that may change on resume, such as logging cadence and output paths; the seed included), and
``data``, a fingerprint of the training data's content (:func:`data_fingerprint`). A resume from a
checkpoint of another identity is refused with the differing arguments named; ``latest`` picks the
newest complete checkpoint of this identity and says which newer ones it skipped and why.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate import Accelerator

from hf_lln._permissions import make_shareable

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
WRAPPER_COMPONENTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})
# Arguments that may differ between a run and its resumption: where and how often it logs, evaluates,
# checkpoints and uploads, how it evaluates, and memory/caching options that change no training step.
NOT_RUN_DEFINING = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "logging_steps",
        "eval_steps",
        "checkpointing_steps",
        "with_tracking",
        "report_to",
        "push_to_hub",
        "hub_model_id",
        "hub_token",
        "per_device_eval_batch_size",
        "gradient_checkpointing",
        "preprocessing_num_workers",
        "overwrite_cache",
        "trust_remote_code",
    }
)


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


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from: missing, incomplete, corrupt or of another run."""


def run_arguments(args: argparse.Namespace) -> dict:
    """The arguments that define a run (all but ``NOT_RUN_DEFINING``), as JSON values, sorted by name."""
    values = {
        name: value
        for name, value in sorted(vars(args).items())
        if name not in NOT_RUN_DEFINING and not name.startswith("_")
    }
    return json.loads(json.dumps(values, default=str))


def data_fingerprint(splits: Mapping[str, object]) -> str:
    """Hash of the content of ``splits`` (split name -> ``datasets.Dataset``): the same rows in the same
    order give the same hash, in any process and on any machine; any other content another one.

    It reads every byte of the data once (about a second per GB), so scripts compute it only when a run
    checkpoints or resumes.
    """
    hasher = hashlib.blake2b(digest_size=16)
    for name in sorted(splits):
        dataset = splits[name]
        hasher.update(f"{name}:{dataset.num_rows}:{dataset.column_names}\n".encode())
        _hash_table(hasher, dataset.data)
        if dataset._indices is not None:  # a shuffled or selected view: the row order is the mapping's
            hasher.update(b"indices\n")
            _hash_table(hasher, dataset._indices)
    return hasher.hexdigest()


def _hash_table(hasher, table) -> None:
    table = getattr(table, "table", table)  # datasets' Table wraps a pyarrow.Table
    for column in table.columns:
        for chunk in column.chunks:
            hasher.update(f"{chunk.type}:{chunk.offset}:{len(chunk)}\n".encode())
            for buffer in chunk.buffers():
                if buffer is not None:
                    hasher.update(memoryview(buffer))


def checkpoint_step(path: Path) -> int | None:
    """N for a folder named ``step_N`` holding a training state file, else None (complete or not)."""
    match = CHECKPOINT_PATTERN.match(path.name)
    if match is None or not (path / STATE_FILE).is_file():
        return None
    return int(match.group(1))


def read_state(path: Path) -> dict:
    """The training state of the checkpoint at ``path``; ``CheckpointError`` naming the file when it is
    missing, unreadable or not a training state."""
    state_file = Path(path) / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: not a checkpoint folder (no {STATE_FILE}; a checkpoint whose writing never finished has none)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{state_file} is unreadable ({error}): the checkpoint is incomplete or corrupt"
        ) from None
    if not isinstance(state, dict) or not {"progress", "num_processes", "model_fingerprint"} <= state.keys():
        raise CheckpointError(f"{state_file} is not a training state written by hf_lln (keys are missing)")
    return state


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from (no or a corrupt state, a file missing or of
    another size than was written), or None when it is complete."""
    try:
        state = read_state(path)
    except CheckpointError as error:
        return str(error)
    path = Path(path)
    files = state.get("files")
    if files is None:  # written before file sizes were recorded: the files accelerate always writes
        if not list(path.glob("model*.safetensors")) + list(path.glob("pytorch_model*.bin")):
            return f"{path} holds no model weights (model.safetensors): the checkpoint is incomplete"
        files = {"optimizer.bin": None}
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"{file} is missing: the checkpoint is incomplete"
        if size is not None and file.stat().st_size != size:
            return (
                f"{file} has {file.stat().st_size} bytes where {size} were written: "
                "the checkpoint was cut short or altered"
            )
    return None


def run_differences(recorded: Mapping, current: Mapping) -> list[str]:
    """``--name A (checkpoint) vs B (now)`` for each argument both record with different values."""
    differences = []
    for name in sorted(recorded.keys() & current.keys()):
        before, now = recorded[name], current[name]
        both_nan = (
            isinstance(before, float) and isinstance(now, float) and math.isnan(before) and math.isnan(now)
        )
        if before != now and not both_nan:
            differences.append(f"--{name} {_shown(before)} in the checkpoint, {_shown(now)} now")
    return differences


def _shown(value) -> str:
    return "(unset)" if value is None else str(value)


def check_checkpoint_run(path: Path, arguments: Mapping | None = None, data: str | None = None) -> dict:
    """Raise ``CheckpointError`` naming what differs unless the checkpoint at ``path`` was written by a run of
    these ``arguments`` (:func:`run_arguments`) and training ``data`` (:func:`data_fingerprint`); None skips
    that half of the check. Returns the checkpoint's training state."""
    state = read_state(path)
    run = state.get("run")
    if run is None:
        logger.warning(
            "checkpoint %s was written before checkpoints recorded their run: it cannot be checked to be this run's",
            path,
        )
        return state
    differences = run_differences(run["arguments"], arguments) if arguments is not None else []
    if data is not None and run.get("data") is not None and run["data"] != data:
        differences.append(
            f"the training data: fingerprint {run['data']} in the checkpoint, {data} now (other files, "
            "other content or another --max_train_samples)"
        )
    if differences:
        raise CheckpointError(
            f"--resume_from_checkpoint {path}: the checkpoint belongs to another run, with "
            + "; ".join(differences)
            + ". Resume with the arguments and data it was written with, or start a new run "
            "(another --output_dir, or --overwrite_output_dir to replace that run)"
        )
    return state


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """``(N, output_dir/step_N)`` for every folder named like a checkpoint, newest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match is not None and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_checkpoint(output_dir: Path, arguments: Mapping | None = None) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint in ``output_dir`` written by a run of ``arguments`` (any run when
    None), and why each newer ``step_N`` was passed over (``"step_N: reason"``)."""
    skipped: list[tuple[str, str]] = []
    for _, path in _checkpoints(Path(output_dir)):
        problem = checkpoint_problem(path)
        if problem is not None:
            skipped.append((path.name, f"incomplete or corrupt: {problem}"))
            continue
        if arguments is not None:
            run = read_state(path).get("run")
            differences = (
                ["written before checkpoints recorded their run"]
                if run is None
                else run_differences(run["arguments"], arguments)
            )
            if differences:
                skipped.append((path.name, f"another run's, with {'; '.join(differences)}"))
                continue
        return path, _grouped(skipped)
    return None, _grouped(skipped)


def _grouped(skipped: list[tuple[str, str]]) -> list[str]:
    """``"step_6, step_4: reason"``: checkpoints skipped for the same reason named together."""
    reasons: dict[str, list[str]] = {}
    for name, reason in skipped:
        reasons.setdefault(reason, []).append(name)
    return [f"{', '.join(names)} ({reason})" for reason, names in reasons.items()]


def find_checkpoint(resume_from_checkpoint: str, output_dir: Path, arguments: Mapping | None = None) -> Path:
    """Resolve ``--resume_from_checkpoint``: a folder path, or ``"latest"``, the newest complete checkpoint
    in ``output_dir`` of this run (``arguments``, see :func:`run_arguments`; any run when None).

    ``latest`` logs a warning for each newer checkpoint it skipped (incomplete, corrupt, another run's).
    Raises ``CheckpointError`` (a ``ValueError``) naming the problem: no usable checkpoint, a path that is
    not a complete checkpoint, or one written with other arguments.
    """
    if resume_from_checkpoint == "latest":
        found, skipped = latest_checkpoint(Path(output_dir), arguments)
        if found is None:
            reasons = "; ".join(skipped) if skipped else "there is none"
            raise CheckpointError(
                f"--resume_from_checkpoint latest: no complete checkpoint of this run (step_N/{STATE_FILE}) in "
                f"{output_dir}: {reasons}"
            )
        for reason in skipped:
            logger.warning("--resume_from_checkpoint latest: skipped %s", reason)
        return found
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise CheckpointError(
            f"--resume_from_checkpoint {path}: not a checkpoint folder (no such folder); "
            'pass a step_N folder written by --checkpointing_steps, or "latest"'
        )
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"--resume_from_checkpoint {path}: {problem}")
    if arguments is not None:
        check_checkpoint_run(path, arguments)
    return path


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    progress: TrainingProgress,
    fingerprint: str,
    run: Mapping | None = None,
) -> Path:
    """Write ``output_dir/step_N`` atomically (every process must call this); return its path.

    ``run``: the run's identity, ``{"arguments": run_arguments(args), "data": data_fingerprint(...)}``,
    which a resume must match.
    """
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
        files = {
            str(file.relative_to(staging)): file.stat().st_size
            for file in sorted(staging.rglob("*"))
            if file.is_file()
        }
        state = {
            "progress": dataclasses.asdict(progress),
            "num_processes": accelerator.num_processes,
            "model_fingerprint": fingerprint,
            "run": dict(run) if run is not None else None,
            "files": files,
        }
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        make_shareable(staging)  # safetensors writes its files 0600 whatever the umask
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
    state = read_state(path)
    if state["model_fingerprint"] != fingerprint:
        raise CheckpointError(
            f"--resume_from_checkpoint {path}: the checkpoint was written for another model "
            f"(fingerprint {state['model_fingerprint']}, this model {fingerprint}); "
            "use the same --config_name/--model_name_or_path and tokenizer as the run that wrote it"
        )
    return state


def load_checkpoint(
    accelerator: Accelerator, path: Path, fingerprint: str, run: Mapping | None = None
) -> TrainingProgress:
    """Restore accelerate's state from ``path`` and return the progress to continue from.

    Raises ``ValueError`` when the checkpoint was written for another model architecture, by another run
    (``run``: see :func:`save_checkpoint`), or is incomplete or cannot be read.
    """
    path = Path(path)
    state = check_checkpoint_model(path, fingerprint)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"--resume_from_checkpoint {path}: {problem}")
    if run is not None:
        check_checkpoint_run(path, run.get("arguments"), run.get("data"))
    if state["num_processes"] != accelerator.num_processes:
        logger.warning(
            "checkpoint %s was written by %d processes, resuming with %d: data order will not match exactly",
            path,
            state["num_processes"],
            accelerator.num_processes,
        )
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # safetensors, pickle and torch each raise their own kind for a damaged file
        raise CheckpointError(
            f"--resume_from_checkpoint {path}: the checkpoint cannot be loaded "
            f"({type(error).__name__}: {error}); it is corrupt or was written by an incompatible version"
        ) from error
    logger.info("resumed from %s", path)
    return TrainingProgress(**state["progress"])
