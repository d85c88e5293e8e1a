"""PNG plots of an :class:`~hf_lln.experiments.analysis.report.AnalysisResult` (matplotlib, imported lazily)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

LAYER_METRICS = (
    ("row_entropy_normalised", "row entropy / log n"),
    ("spectral_gap", "spectral gap 1 - |λ2|"),
    ("concentration_bias", "concentration bias"),
    ("log_variance", "variance of log attention"),
    ("ks_statistic", "KS distance to log-normal"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(result, out: Path) -> list[Path]:
    """All plots of ``result`` under ``out``; returns their paths."""
    return [
        plot_layers(result.summary, out / "analysis_layers.png"),
        plot_entropy_gap(result.summary, out / "analysis_entropy_vs_gap.png"),
        plot_lognormal(result, out / "analysis_lognormal.png"),
        plot_examples(result.example_matrices, out / "analysis_matrices.png"),
    ]


def _stochastic(summary: dict) -> dict:
    return {name: r for name, r in summary["implementations"].items() if r["row_stochastic"]}


def plot_layers(summary: dict, path: Path) -> Path:
    """Each instrument against layer depth, one line per implementation (means over heads and windows)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(LAYER_METRICS), figsize=(4 * len(LAYER_METRICS), 3.6))
    for index, (name, result) in enumerate(_stochastic(summary).items()):
        layers = [layer["layer"] for layer in result["layers"]]
        for axis, (key, label) in zip(axes, LAYER_METRICS, strict=True):
            values = [
                math.nan if layer["mean"][key] is None else layer["mean"][key] for layer in result["layers"]
            ]
            axis.plot(layers, values, marker="o", label=name, color=f"C{index}")
            axis.set_title(label, fontsize=10)
            axis.set_xlabel("layer")
            axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    model = "/".join(Path(summary["model"]).parts[-2:])
    figure.suptitle(f"{model}: {summary['windows']} windows of {summary['seq_len']} tokens, means over heads")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_entropy_gap(summary: dict, path: Path) -> Path:
    """Every (layer, head) as a point: row entropy against spectral gap.

    Low entropy with a small gap is unbiased concentration (each query on its own keys); low entropy with a
    large gap is biased (all queries on the same keys).
    """
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 5))
    for index, (name, result) in enumerate(_stochastic(summary).items()):
        heads = [head for layer in result["layers"] for head in layer["heads"]]
        axis.scatter(
            [h["row_entropy_normalised"] for h in heads],
            [h["spectral_gap"] for h in heads],
            s=14,
            alpha=0.7,
            label=name,
            color=f"C{index}",
        )
    axis.set_xlabel("row entropy / log n  (low = concentrated)")
    axis.set_ylabel("spectral gap 1 - |λ2|  (high = rows agree: biased)")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("concentration per layer and head")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_lognormal(result, path: Path) -> Path:
    """Per implementation: histogram of the standardised log attention (first and last layer) over the standard
    normal density, and their normal Q-Q plot. A log-normal matrix follows the density and the diagonal."""
    from scipy import stats

    plt = _pyplot()
    names = list(result.log_samples)
    figure, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6.2), squeeze=False)
    grid = torch.linspace(-4, 4, 200)
    for column, name in enumerate(names):
        layers = sorted(result.log_samples[name])
        histogram, qq = axes[0, column], axes[1, column]
        for layer, color in ((layers[0], "C0"), (layers[-1], "C3")):
            sample = result.log_samples[name][layer].numpy()
            histogram.hist(
                sample,
                bins=60,
                range=(-5, 5),
                density=True,
                histtype="stepfilled",
                alpha=0.45,
                color=color,
                label=f"layer {layer}",
            )
            theoretical = stats.norm.ppf((torch.arange(len(sample)) + 0.5).numpy() / len(sample))
            qq.plot(theoretical, sorted(sample), ".", markersize=1.5, color=color, label=f"layer {layer}")
        histogram.plot(
            grid, torch.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi), "k-", linewidth=1, label="N(0, 1)"
        )
        qq.plot([-4, 4], [-4, 4], "k-", linewidth=1)
        qq.set_xlim(-4.2, 4.2)
        qq.set_ylim(-6, 6)
        histogram.set_title(name)
        qq.set_xlabel("normal quantile")
        if column == 0:
            histogram.set_ylabel("density of standardised log p")
            qq.set_ylabel("standardised log p quantile")
            histogram.legend(fontsize=7)
        for axis in (histogram, qq):
            axis.grid(alpha=0.3)
    figure.suptitle("log attention per row, standardised: log-normal rows follow N(0, 1) and the diagonal")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_examples(matrices: dict[str, torch.Tensor], path: Path) -> Path:
    """Layer 0, head 0 of the first window for each implementation: log10 probabilities (signed weights for
    cheap linear attention, on a diverging scale)."""
    from matplotlib.colors import SymLogNorm

    plt = _pyplot()
    names = list(matrices)
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        matrix = matrices[name]
        if (matrix < 0).any():
            limit = matrix.abs().max().item()
            norm = SymLogNorm(linthresh=limit / 100, vmin=-limit, vmax=limit)
            image = axis.imshow(matrix.numpy(), cmap="RdBu_r", norm=norm)
        else:
            image = axis.imshow(matrix.clamp_min(1e-8).log10().numpy(), cmap="magma", vmin=-6, vmax=0)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("key")
        axis.set_ylabel("query")
    figure.suptitle("layer 0, head 0: log10 attention (cheap linear: signed weights)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
