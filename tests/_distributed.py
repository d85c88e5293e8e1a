"""Process groups for tests that spawn several CPU processes."""

from __future__ import annotations

import datetime
import os

import torch


def join_gloo_group(rank: int, world_size: int, folder: str) -> None:
    """Join a gloo group of ``world_size`` processes that meet through a file in ``folder``, and set the variables
    accelerate reads, so that an ``Accelerator`` made afterwards joins this group. A file, not a port: a free port
    picked in advance can be taken by another test's processes before these bind it."""
    # accelerate asks for MASTER_ADDR even when the group already exists
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        OMP_NUM_THREADS="1",
    )
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )


def exit_process() -> None:
    """End a spawned process at once, its results written: the DDP reducer and the gloo group, torn down at the
    process's end, can deadlock (the main thread holds the GIL waiting for the group's lock; the group's worker
    thread holds that lock and waits for the GIL while it frees a finished all-reduce), and the test then waits
    for ever."""
    os._exit(0)
