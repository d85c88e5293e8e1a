"""Checkpoints written by several processes: the folder is renamed only once every process has written."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from hf_lln.recipes.training.checkpoint import STATE_FILE, TrainingProgress, save_checkpoint


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_checkpoint(rank: int, world_size: int, port: int, output_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        OMP_NUM_THREADS="1",
    )
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(4, 2))
    if rank == world_size - 1:
        # the last process reaches its own files well after the main process has written the weights
        accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: time.sleep(2.0))
    save_checkpoint(accelerator, Path(output_dir), TrainingProgress(completed_steps=3), "fingerprint")
    accelerator.end_training()


def test_a_slow_process_still_writes_into_the_renamed_checkpoint(tmp_path):
    mp.spawn(_write_checkpoint, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    checkpoint = tmp_path / "step_3"
    assert (checkpoint / STATE_FILE).is_file()
    assert (checkpoint / "random_states_0.pkl").is_file()
    assert (checkpoint / "random_states_1.pkl").is_file()
    assert not list(tmp_path.glob(".step_*"))
