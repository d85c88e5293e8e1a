"""Side-by-side analysis of several attention implementations on the same weights and text: JSON + PNG.

For every implementation the model is loaded with that ``attn_implementation``, run on the same token
windows, and each layer's attention matrix (:mod:`hf_lln.experiments.analysis.matrices`) is rebuilt from the captured
queries and keys. Deeper layers therefore see the hidden states the implementation itself produced (layer 0
sees identical inputs for all). ``reconstruction_error`` (max ``|matrix @ v - captured output|``) confirms the
matrix is what the model computed.

Per layer and head, averaged over the windows, every row-stochastic implementation gets the instruments of
:func:`hf_lln.experiments.analysis.instruments.summarize`; cheap linear attention, whose matrix is signed and not
normalised, gets ``negative_fraction``, ``row_sum_mean`` and ``row_sum_std`` instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from hf_lln.experiments.analysis import instruments
from hf_lln.experiments.analysis.capture import capture_attention, matrix_settings
from hf_lln.experiments.analysis.matrices import attention_matrix, is_row_stochastic, variant_of

DISTRIBUTION_METRICS = (
    "log_variance",
    "ks_statistic",
    "row_entropy",
    "row_entropy_normalised",
    "column_mass_entropy",
    "spectral_gap",
    "concentration_bias",
)
SIGNED_METRICS = ("negative_fraction", "row_sum_mean", "row_sum_std")
SAMPLES_PER_LAYER = 4000


@dataclasses.dataclass
class AnalysisResult:
    """``summary``: the JSON-ready report. ``log_samples[impl][layer]``: standardised log attention (for Q-Q
    plots). ``example_matrices[impl]``: layer 0, head 0 of the first window, ``(seq, seq)``."""

    summary: dict
    log_samples: dict[str, dict[int, torch.Tensor]]
    example_matrices: dict[str, torch.Tensor]


def token_windows(tokenizer, text: str, seq_len: int, windows: int) -> torch.Tensor:
    """``(windows, seq_len)`` ids: consecutive stretches of ``text``, each as ``[CLS] ... [SEP]``
    (``<s> ... </s>`` for RoBERTa)."""
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} needs cls and sep tokens (BERT/RoBERTa style)"
        )
    body = seq_len - 2
    if body < 1:
        raise ValueError(f"seq_len must exceed the 2 special tokens, got {seq_len}")
    needed = body * windows
    # A token rarely spans more than 12 characters; tokenize the whole text only if this slice falls short.
    ids = tokenizer(text[: needed * 12], add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) < needed:
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) < needed:
        raise ValueError(f"text has {len(ids)} tokens; {windows} windows of seq_len={seq_len} need {needed}")
    rows = [
        [tokenizer.cls_token_id, *ids[i * body : (i + 1) * body], tokenizer.sep_token_id]
        for i in range(windows)
    ]
    return torch.tensor(rows)


def signed_summary(matrix: torch.Tensor) -> dict[str, float]:
    """Sign and row-sum statistics of a signed matrix ``(n, n)`` (cheap linear attention)."""
    row_sums = matrix.sum(-1)
    return {
        "negative_fraction": float((matrix < 0).double().mean()),
        "row_sum_mean": float(row_sums.mean()),
        "row_sum_std": float(row_sums.std()),
    }


def _mean(records: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """Mean of each key over ``records``, ignoring NaN (None when every value is NaN)."""
    means = {}
    for key in keys:
        values = [r[key] for r in records if not math.isnan(r[key])]
        means[key] = sum(values) / len(values) if values else None
    return means


def analyze_model(
    model_path: str | Path, input_ids: torch.Tensor, implementations: list[str]
) -> AnalysisResult:
    """Analyse ``implementations`` (``attn_implementation`` names) of the model at ``model_path`` on
    ``input_ids: (windows, seq)``."""
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModel

    for name in implementations:
        variant_of(name)
    layer_count = getattr(AutoConfig.from_pretrained(model_path), "num_hidden_layers", None)
    # minutes of work per implementation on a CPU: show where it stands
    bar = tqdm(total=layer_count and layer_count * len(implementations), desc="analyze", unit="layer")
    summary = {"model": str(model_path), "seq_len": input_ids.shape[1], "windows": input_ids.shape[0]}
    summary["implementations"] = {}
    log_samples: dict[str, dict[int, torch.Tensor]] = {}
    examples: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(0)
    for name in implementations:
        bar.set_postfix_str(name)
        model = AutoModel.from_pretrained(model_path, attn_implementation=name)
        variant = variant_of(name)
        stochastic = is_row_stochastic(variant)
        keys = DISTRIBUTION_METRICS if stochastic else SIGNED_METRICS
        layers, worst_error = [], 0.0
        for capture in capture_attention(model, input_ids):
            settings = matrix_settings(model, capture.layer)
            matrix = attention_matrix(variant, capture.q, capture.k, scale=capture.scaling, **settings)
            reconstructed = (matrix @ capture.v.double()).float()
            worst_error = max(worst_error, (reconstructed - capture.output).abs().max().item())
            heads = []
            for head in range(matrix.shape[1]):
                per_window = [
                    instruments.summarize(m) if stochastic else signed_summary(m) for m in matrix[:, head]
                ]
                heads.append({"head": head, **_mean(per_window, keys)})
            layers.append({"layer": capture.layer, "heads": heads, "mean": _mean(_finite(heads, keys), keys)})
            if stochastic:
                sample = instruments.standardised_log_attention(matrix[0])
                keep = torch.randperm(sample.numel(), generator=generator)[:SAMPLES_PER_LAYER]
                log_samples.setdefault(name, {})[capture.layer] = sample[keep]
            if capture.layer == 0:
                examples[name] = matrix[0, 0]
            bar.update(1)
        summary["implementations"][name] = {
            "formula": variant,
            "row_stochastic": stochastic,
            "reconstruction_error": worst_error,
            "layers": layers,
            "mean": _mean(_finite([layer["mean"] for layer in layers], keys), keys),
        }
    bar.close()
    return AnalysisResult(summary, log_samples, examples)


def _finite(records: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Records with None (all-NaN means) turned back into NaN so :func:`_mean` skips them."""
    return [{k: math.nan if r[k] is None else r[k] for k in keys} for r in records]


def markdown_table(summary: dict) -> str:
    """One row per implementation: the instruments averaged over layers, heads and windows."""
    header = (
        "| implementation | log-variance | KS (log-normal) | row entropy / log n | spectral gap "
        "| concentration bias | reconstruction error |"
    )
    lines = [header, "|" + "---|" * 7]
    for name, result in summary["implementations"].items():
        mean = result["mean"]
        if result["row_stochastic"]:
            cells = [
                mean[k] for k in ("log_variance", "ks_statistic", "row_entropy_normalised", "spectral_gap")
            ]
            cells.append(mean["concentration_bias"])
            text = " | ".join("n/a" if c is None else f"{c:.3f}" for c in cells)
        else:
            text = f"signed: {mean['negative_fraction']:.0%} negative weights, rows sum to {mean['row_sum_mean']:.3f}"
            text += f" ± {mean['row_sum_std']:.3f} | | | |"
        lines.append(f"| {name} | {text} | {result['reconstruction_error']:.1e} |")
    return "\n".join(lines)


def write_report(result: AnalysisResult, out: Path) -> list[Path]:
    """Write ``analysis.json``, ``analysis.md`` (the table) and the plots under ``out``; returns the paths."""
    from hf_lln.experiments.analysis import plots

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "analysis.json"
    json_path.write_text(json.dumps(result.summary, indent=1, allow_nan=False))
    table_path = out / "analysis.md"
    table_path.write_text(markdown_table(result.summary) + "\n")
    return [json_path, table_path, *plots.write_plots(result, out)]
