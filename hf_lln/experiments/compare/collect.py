"""Collecting a comparison: everything its runs wrote, per track and arm, as one JSON-ready dict."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from hf_lln.experiments.compare.plan import RESULTS_FILE, Comparison
from hf_lln.recipes.glue import summarize_repeats, task_score

LOG_HISTORY_FILE = "log_history.json"


def read_json(path: Path):
    """The JSON in ``path``; None when there is no such file (a run that did not get that far)."""
    return json.loads(path.read_text()) if path.is_file() else None


def collect(comparison: Comparison) -> dict:
    """Everything the runs wrote, per track and arm, with folders relative to the output folder.

    Per arm: ``mlm`` (results, validation loss curve ``[[step, eval_loss], ...]``, folder), ``glue[task][seed]``
    (folder, GLUE task score, metrics), ``summary`` (mean, sample std and count over seeds of each task's score,
    of the per-seed average over the tasks and of the training seconds per epoch:
    :func:`hf_lln.recipes.glue.summarize_repeats`). ``runs``: each run's command, status and launch record.
    """
    tracks = {}
    for track in comparison.tracks:
        arms = {}
        for arm in comparison.arms:
            entry = {"attention": arm.attention, "settings": dict(arm.settings), "mlm": None, "glue": {}}
            if comparison.has_mlm(track):
                folder = comparison.mlm_dir(track, arm)
                history = read_json(folder / LOG_HISTORY_FILE) or []
                entry["mlm"] = {
                    "folder": comparison.relative(folder),
                    "results": read_json(folder / RESULTS_FILE),
                    "curve": [[item["step"], item["eval_loss"]] for item in history if "eval_loss" in item],
                }
            per_seed: dict[int, dict[str, dict[str, float]]] = {}
            for task in comparison.tasks:
                entry["glue"][task] = {}
                for seed in comparison.seeds:
                    folder = comparison.glue_dir(track, arm, seed) / task
                    results = read_json(folder / RESULTS_FILE)
                    if results is None:
                        continue
                    entry["glue"][task][seed] = {
                        "folder": comparison.relative(folder),
                        "score": task_score(task, results),
                        "metrics": {key: value for key, value in results.items() if key.startswith("eval_")},
                    }
                    per_seed.setdefault(seed, {})[task] = results
            entry["summary"] = summarize_repeats(list(per_seed.values()), comparison.tasks)
            arms[arm.name] = entry
        tracks[track] = arms
    runs = [
        {
            "name": run.name,
            "stage": run.stage,
            "finished": run.finished(),
            "launch": read_json(comparison.log_dir / f"{run.name}.json"),
        }
        for run in comparison.runs
    ]
    return {
        "scale": comparison.scale_name,
        "scale_settings": asdict(comparison.scale),
        "softmax_checkpoint": str(comparison.softmax_checkpoint) if comparison.softmax_checkpoint else None,
        "tasks": list(comparison.tasks),
        "seeds": list(comparison.seeds),
        "tracks": tracks,
        "runs": runs,
    }
