"""Checkpoints written by several processes: the folder is renamed only once every process has written."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from hf_lln.recipes.training.checkpoint import STATE_FILE, TrainingProgress, save_checkpoint
from tests._distributed import exit_process, join_gloo_group


def _write_checkpoint(rank: int, world_size: int, output_dir: str) -> None:
    join_gloo_group(rank, world_size, output_dir)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(4, 2))
    if rank == world_size - 1:
        # the last process reaches its own files well after the main process has written the weights
        accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: time.sleep(2.0))
    save_checkpoint(accelerator, Path(output_dir), TrainingProgress(completed_steps=3), "fingerprint")
    accelerator.end_training()
    exit_process()


def test_a_slow_process_still_writes_into_the_renamed_checkpoint(tmp_path):
    mp.spawn(_write_checkpoint, args=(2, str(tmp_path)), nprocs=2, join=True)
    checkpoint = tmp_path / "step_3"
    assert (checkpoint / STATE_FILE).is_file()
    assert (checkpoint / "random_states_0.pkl").is_file()
    assert (checkpoint / "random_states_1.pkl").is_file()
    assert not list(tmp_path.glob(".step_*"))
