"""The report of a comparison: ``comparison.md`` (per track, the MLM table and the GLUE table, the one
:mod:`hf_lln.recipes.glue_sweep` writes too), ``comparison.json`` and the plot of the MLM loss curves."""

from __future__ import annotations

import json

from hf_lln.experiments.compare.collect import collect
from hf_lln.experiments.compare.plan import TRACK_TITLES, Comparison
from hf_lln.experiments.compare.plot import plot_mlm_curves
from hf_lln.recipes.glue import averaged_tasks, format_comparison_table


def _wall_seconds(collected: dict, prefix: str) -> str:
    """The cell of the launch seconds of the runs named ``prefix...``, summed."""
    seconds = [
        run["launch"]["seconds"]
        for run in collected["runs"]
        if run["name"].startswith(prefix) and run["launch"]
    ]
    return f"{sum(seconds):.0f}" if seconds else "–"


def format_report(comparison: Comparison, collected: dict) -> str:
    """The Markdown report: per track, the MLM table and the GLUE table (every row names its run folders)."""
    scale = comparison.scale
    seeds = ", ".join(map(str, comparison.seeds))
    devices = sorted({run["launch"]["device"] for run in collected["runs"] if run["launch"]})
    lines = [
        f"# Attention quality comparison (scale `{comparison.scale_name}`)",
        "",
        f"Folders are relative to `{comparison.output_dir}`; launch logs and commands are in `logs/`. "
        f"Devices: {', '.join(devices) or 'none recorded'}. GLUE: dev-set task score in percent (GLUE's: the "
        f"mean of the task's metrics), mean ± sample std over seeds {seeds}; the average is taken per seed over "
        f"{', '.join(averaged_tasks(comparison.tasks))}, then over seeds; s/epoch: training seconds of one "
        f"epoch of every task, summed over the tasks. Wall seconds are per launch (shared GPU when launched with "
        f"--jobs > 1).",
    ]
    for track in comparison.tracks:
        arms = collected["tracks"][track]
        lines += ["", f"## {TRACK_TITLES[track].capitalize()}"]
        if track == "converted":
            adapt = f", adapted with {scale.adapt_steps} MLM steps" if scale.adapt_steps else ", not adapted"
            lines += ["", f"Checkpoint: `{comparison.softmax_checkpoint}`{adapt}."]
        if comparison.has_mlm(track):
            title = "MLM pretraining" if track == "scratch" else "MLM adaptation"
            lines += [
                "",
                f"### {title}: validation loss",
                "",
                "| attention | eval loss | perplexity | steps | train s | wall s | folder |",
                "|---|---:|---:|---:|---:|---:|---|",
            ]
            for name, entry in arms.items():
                results = entry["mlm"]["results"] or {}
                cells = [
                    f"{results['eval_loss']:.4f}" if "eval_loss" in results else "–",
                    f"{results['eval_perplexity']:.1f}" if "eval_perplexity" in results else "–",
                    str(results.get("train_steps", "–")),
                    f"{results['train_runtime']:.0f}" if "train_runtime" in results else "–",
                    _wall_seconds(collected, f"{track}-{name}-mlm"),
                ]
                lines.append(f"| {name} | {' | '.join(cells)} | `{entry['mlm']['folder']}` |")
        reference = next((arm.name for arm in comparison.arms if arm.is_softmax and not arm.settings), None)
        columns = {
            "wall s": {
                arm.name: _wall_seconds(collected, f"{track}-{arm.name}-glue-") for arm in comparison.arms
            },
            "folders": {
                arm.name: f"`{comparison.relative(comparison.glue_dir(track, arm, 0).parent)}/seed_<s>/<task>`"
                for arm in comparison.arms
            },
        }
        summaries = {name: entry["summary"] for name, entry in arms.items()}
        table = format_comparison_table(
            summaries, comparison.tasks, repeats=len(comparison.seeds), reference=reference, columns=columns
        )
        lines += ["", "### GLUE fine-tuning", "", table]
    unfinished = [run["name"] for run in collected["runs"] if not run["finished"]]
    if unfinished:
        lines += ["", f"Unfinished runs ({len(unfinished)}): {', '.join(unfinished)}."]
    return "\n".join(lines) + "\n"


def write_report(comparison: Comparison) -> dict:
    """Write ``comparison.md``, ``comparison.json`` and ``mlm_loss.png`` into the output folder; return the JSON."""
    collected = collect(comparison)
    comparison.output_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_mlm_curves(collected, comparison.output_dir / "mlm_loss.png")
    collected["plot"] = plot.name if plot else None
    report = format_report(comparison, collected)
    if plot:
        report += f"\n![validation MLM loss]({plot.name})\n"
    (comparison.output_dir / "comparison.md").write_text(report)
    (comparison.output_dir / "comparison.json").write_text(json.dumps(collected, indent=1))
    print(report, flush=True)
    return collected
