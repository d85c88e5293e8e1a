"""Launching a comparison: every unfinished run as a subprocess, stage by stage, several at once, each logged."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import site
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import hf_lln
from hf_lln.experiments.compare.plan import STAGES, Comparison, Run

PACKAGE_ROOT = Path(hf_lln.__file__).resolve().parents[1]


def child_environment(jobs: int) -> dict[str, str]:
    """The environment of the runs: this one, with a checkout that this process imports hf_lln from (through
    sys.path, e.g. the current folder) first on PYTHONPATH, so that the children run the same code. An installed
    hf_lln is left to be found where it is: site-packages first on PYTHONPATH would shadow the caller's own
    entries."""
    env = dict(os.environ)
    site_dirs = {Path(path).resolve() for path in (*site.getsitepackages(), site.getusersitepackages())}
    if PACKAGE_ROOT not in site_dirs:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    return env


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def launch(comparison: Comparison, jobs: int) -> dict[str, str]:
    """Run every unfinished run, stage by stage, ``jobs`` at once; return each run's status.

    Statuses: ``finished before``, ``ok``, ``failed`` (its log's tail is printed), ``blocked`` (a run it
    needs failed). Each launch writes ``logs/<run>.log`` (output) and ``logs/<run>.json`` (command, exit
    code, wall seconds, device).
    """
    comparison.log_dir.mkdir(parents=True, exist_ok=True)
    env = child_environment(jobs)
    device = device_name()
    statuses: dict[str, str] = {}
    pending = sum(not run.finished() for run in comparison.runs)
    completed = itertools.count(1)
    for stage in STAGES:
        ready = []
        for run in (run for run in comparison.runs if run.stage == stage):
            if run.finished():
                statuses[run.name] = "finished before"
            elif any(statuses.get(name) in ("failed", "blocked") for name in run.needs):
                statuses[run.name] = "blocked"
                print(f"{run.name}: not launched, {', '.join(run.needs)} failed", flush=True)
            else:
                ready.append(run)

        def launch_one(run: Run) -> str:
            log = comparison.log_dir / f"{run.name}.log"
            print(f"{run.name}: launched, log {log}", flush=True)
            start = time.perf_counter()
            with log.open("w") as stream:
                stream.write(shlex.join(run.command) + "\n\n")
                stream.flush()
                code = subprocess.run(
                    run.command, stdout=stream, stderr=subprocess.STDOUT, env=env
                ).returncode
            seconds = time.perf_counter() - start
            record = {"command": list(run.command), "returncode": code, "seconds": seconds, "device": device}
            (comparison.log_dir / f"{run.name}.json").write_text(json.dumps(record, indent=1))
            ok = code == 0 and run.finished()
            print(
                f"[{next(completed)}/{pending}] {run.name}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s",
                flush=True,
            )
            if not ok:
                tail = log.read_text(errors="replace").splitlines()[-25:]
                print("\n".join(f"    {line}" for line in tail), flush=True)
            return "ok" if ok else "failed"

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for run, status in zip(ready, pool.map(launch_one, ready), strict=True):
                statuses[run.name] = status
    return statuses
