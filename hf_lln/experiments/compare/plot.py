"""The plot of a comparison: validation MLM loss against step, one panel per track (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path

from hf_lln.experiments.compare.plan import TRACK_TITLES


def plot_mlm_curves(collected: dict, path: Path) -> Path | None:
    """Validation MLM loss against step, one panel per track with MLM runs; None when matplotlib is missing."""
    panels = {
        track: {
            name: entry["mlm"]["curve"]
            for name, entry in arms.items()
            if entry["mlm"] and entry["mlm"]["curve"]
        }
        for track, arms in collected["tracks"].items()
    }
    panels = {track: curves for track, curves in panels.items() if curves}
    if not panels:
        return None
    try:
        import matplotlib
    except ImportError:
        print(f"{path.name} not drawn: matplotlib is not installed (pip install matplotlib)", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for axis, (track, curves) in zip(axes[0], panels.items(), strict=True):
        for name, curve in curves.items():
            steps, losses = zip(*curve, strict=True)
            axis.plot(steps, losses, marker="o", markersize=3, label=name)
        axis.set_title(f"{TRACK_TITLES[track]} ({collected['scale']})")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("validation MLM loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
