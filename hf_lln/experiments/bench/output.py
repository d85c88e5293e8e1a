"""What a run writes: ``benchmark.csv`` row by row, ``benchmark.md`` tables and log-log PNG plots."""

from __future__ import annotations

import csv
from pathlib import Path

CSV_NAME, MARKDOWN_NAME = "benchmark.csv", "benchmark.md"
CSV_FIELDS = (
    "suite",
    "device",
    "device_name",
    "dtype",
    "variant",
    "model",
    "pass",
    "seq_len",
    "batch",
    "tokens",
    "queries",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "repeats",
    "peak_mib",
    "floor_bytes",
    "floor_ms",
    "floor_fraction",
    "bandwidth_gbps",
    "status",
)


class CsvLog:
    """``benchmark.csv`` in ``output_dir``: the header when created, then each row appended as it comes, so an
    interrupted run keeps every row it measured."""

    def __init__(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / CSV_NAME
        with self.path.open("w", newline="") as handle:
            csv.DictWriter(handle, fieldnames=CSV_FIELDS).writeheader()

    def append(self, row: dict) -> None:
        """Append one row (keys from :data:`CSV_FIELDS`)."""
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=CSV_FIELDS).writerow(row)


def write_summaries(rows: list[dict], output_dir: Path) -> list[Path]:
    """(Re)write ``benchmark.md`` (:func:`markdown_tables`) and the plots (:func:`plot_results`) of ``rows``."""
    markdown = output_dir / MARKDOWN_NAME
    markdown.write_text(markdown_tables(rows))
    return [markdown, *plot_results(rows, output_dir)]


def plot_results(rows: list[dict], output_dir: Path) -> list[Path]:
    """Log-log PNGs: for each suite, device and dtype, time and peak memory against sequence length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    measured = [r for r in rows if r["status"] == "ok"]
    groups = sorted({(r["suite"], r["device"], r["dtype"], r["model"]) for r in measured})
    for suite, device, dtype, model in groups:
        selected = [
            r
            for r in measured
            if (r["suite"], r["device"], r["dtype"], r["model"]) == (suite, device, dtype, model)
        ]
        figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
        lines = sorted({(r["variant"], r["pass"], r["queries"]) for r in selected}, key=str)
        colors = {
            variant: f"C{i % 10}" for i, variant in enumerate(dict.fromkeys(r["variant"] for r in selected))
        }
        markers = {
            queries: "os^vD<>"[i % 7]
            for i, queries in enumerate(dict.fromkeys(r["queries"] for r in selected))
        }
        for variant, pass_name, queries in lines:
            points = sorted(
                (r["seq_len"], float(r["median_ms"]), float(r["peak_mib"]))
                for r in selected
                if (r["variant"], r["pass"], r["queries"]) == (variant, pass_name, queries)
            )
            label = variant + ("" if suite == "encode_lookup" else f" {pass_name.replace('_', '+')}")
            label += f" q={queries}" if queries != "" else ""
            style = dict(
                marker=markers[queries],
                markersize=3,
                color=colors[variant],
                linestyle="--" if pass_name == "forward_backward" else "-",
            )
            seqs = [p[0] for p in points]
            time_axis.plot(seqs, [p[1] for p in points], label=label, **style)
            memory_axis.plot(seqs, [max(p[2], 1e-3) for p in points], label=label, **style)
        for axis, ylabel in (
            (time_axis, "median time per call (ms)"),
            (memory_axis, "peak extra memory (MiB)"),
        ):
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("document length" if suite == "encode_lookup" else "sequence length")
            axis.set_ylabel(ylabel)
            axis.grid(True, which="both", alpha=0.3)
        title = f"{suite}{' ' + model if model else ''} · {device} · {dtype}"
        if suite != "encode_lookup":
            title += (
                f" · {selected[0]['tokens']} tokens per call"
                if len({r["tokens"] for r in selected}) == 1
                else ""
            )
        figure.suptitle(title)
        memory_axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        figure.tight_layout()
        path = output_dir / f"{suite}{'_' + model if model else ''}_{device}_{dtype}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def markdown_tables(rows: list[dict]) -> str:
    """Doc-ready Markdown: one table per suite, model, dtype and pass; a row per sequence length (and query
    count), a column per variant; cells ``median ms / peak MiB / floor fraction`` or the failure status."""
    sections = []
    groups = dict.fromkeys((r["suite"], r["model"], r["dtype"], r["pass"]) for r in rows)
    for suite, model, dtype, pass_name in groups:
        selected = [
            r
            for r in rows
            if (r["suite"], r["model"], r["dtype"], r["pass"]) == (suite, model, dtype, pass_name)
        ]
        variants = list(dict.fromkeys(r["variant"] for r in selected))
        keys = list(dict.fromkeys((r["seq_len"], r["queries"]) for r in selected))
        first = selected[0]
        title = f"{suite}{' ' + model if model else ''}, {dtype}, {pass_name.replace('_', '+')}, {first['device_name']}"
        title += f" (copy bandwidth {first['bandwidth_gbps']} GB/s)"
        label = "doc length, queries" if suite == "encode_lookup" else "seq_len (batch)"
        lines = [f"**{title}**: ms / peak MiB / fraction of the bandwidth floor", ""]
        lines += ["| " + " | ".join([label, *variants]) + " |", "|" + "---|" * (len(variants) + 1)]
        for seq, queries in keys:
            cells = []
            for variant in variants:
                match = [
                    r
                    for r in selected
                    if (r["seq_len"], r["queries"], r["variant"]) == (seq, queries, variant)
                ]
                if not match:
                    cells.append("")
                elif match[0]["status"] != "ok":
                    cells.append(match[0]["status"].split(":")[0])
                else:
                    row = match[0]
                    cells.append(
                        f"{row['median_ms']:.3g} / {row['peak_mib']:.4g} / {row['floor_fraction']:.2f}"
                    )
            batch = next(r["batch"] for r in selected if (r["seq_len"], r["queries"]) == (seq, queries))
            key = f"{seq}, {queries or 'encode'}" if suite == "encode_lookup" else f"{seq} ({batch})"
            lines.append("| " + " | ".join([key, *cells]) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"
