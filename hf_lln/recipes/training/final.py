"""The end of a run: model (safetensors), tokenizer, ``all_results.json``, model card, optional Hub upload."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from hf_lln._permissions import make_shareable
from hf_lln.hub import push_folder_to_hub, write_model_card

logger = logging.getLogger(__name__)

RESULTS_FILE = "all_results.json"
LOG_HISTORY_FILE = "log_history.json"


def save_final_model(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer,
    args: argparse.Namespace,
    results: Mapping[str, float],
    *,
    log_history: Sequence[Mapping[str, float]] = (),
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Save everything a user needs into ``args.output_dir``; every process must call it.

    ``results`` goes to ``all_results.json``, ``log_history`` (``TrainingSummary.log_history``: the
    loss curve) to ``log_history.json``; ``card`` holds the keyword arguments of
    ``hf_lln.hub.write_model_card`` (``base_model``, ``datasets``, ``eval_results``,
    ``training_summary``; the summary defaults to a table of ``results``). With ``--push_to_hub``
    the folder (checkpoints excluded) is uploaded to ``--hub_model_id``. Returns the output folder.
    """
    output_dir = Path(args.output_dir)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(output_dir, is_main_process=accelerator.is_main_process, state_dict=state_dict)
    if accelerator.is_main_process:
        for weights in output_dir.glob("*.safetensors"):
            make_shareable(weights)  # safetensors writes its files 0600 whatever the umask
        tokenizer.save_pretrained(output_dir)
        (output_dir / RESULTS_FILE).write_text(json.dumps(dict(results), indent=2))
        if log_history:
            (output_dir / LOG_HISTORY_FILE).write_text(
                json.dumps([dict(entry) for entry in log_history], indent=1)
            )
        card = {"training_summary": results_markdown(results), **(card or {})}
        write_model_card(output_dir, unwrapped.config, **card)
        if args.push_to_hub:
            _upload(output_dir, args)
    accelerator.wait_for_everyone()
    logger.info("saved the model, tokenizer and %s to %s", RESULTS_FILE, output_dir)
    return output_dir


def results_markdown(results: Mapping[str, float]) -> str:
    """``results`` as a two-column Markdown table, the default training summary of the model card."""
    rows = [
        f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
        for name, value in results.items()
    ]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def _upload(output_dir: Path, args: argparse.Namespace) -> None:
    push_folder_to_hub(
        output_dir,
        args.hub_model_id,
        token=args.hub_token,
        commit_message="hf_lln training run",
        ignore_patterns=["step_*", ".step_*", "step_*/**", ".step_*/**"],
    )
    logger.info("uploaded %s to the Hub repo %s", output_dir, args.hub_model_id)
