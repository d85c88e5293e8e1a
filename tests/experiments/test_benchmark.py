"""The benchmark harness end to end on CPU at tiny sizes: every suite writes its CSV rows and plots."""

from __future__ import annotations

import csv

import pytest
import torch

from hf_lln.cli import build_parser
from hf_lln.experiments.bench import BenchConfig, LiveTensorBytes, run_benchmark


def test_every_suite_writes_csv_rows_and_plots(tmp_path):
    config = BenchConfig(
        output_dir=tmp_path,
        device="cpu",
        variants=("eager", "sdpa", "lln", "cheap_linear"),
        dtypes=("fp32",),
        seq_lengths=(16, 32),
        tokens_per_batch=64,
        model_sizes=("tiny",),
        queries=(1, 4),
        warmup=1,
        min_repeats=2,
        max_repeats=2,
    )
    run_benchmark(config)
    with (tmp_path / "benchmark.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["status"] for row in rows} == {"ok"}
    ops = [row for row in rows if row["suite"] == "ops"]
    assert len(ops) == 4 * 2 * 2  # variants x passes x lengths
    assert {(int(row["seq_len"]), int(row["batch"])) for row in ops} == {(16, 4), (32, 2)}
    models = [row for row in rows if row["suite"] == "models"]
    assert len(models) == 4 * 2 * 2 and {row["model"] for row in models} == {"tiny"}
    lookups = {(row["variant"], row["queries"]) for row in rows if row["suite"] == "encode_lookup"}
    assert (
        ("lln_encode", "") in lookups
        and ("cheap_linear_lookup", "4") in lookups
        and ("sdpa_recompute", "1") in lookups
    )
    for row in rows:
        assert float(row["median_ms"]) > 0 and int(row["repeats"]) == 2
        assert float(row["floor_ms"]) > 0 and float(row["bandwidth_gbps"]) > 0
    # Forward+backward of the same op moves three times the bytes of its forward (4 vs 12 tensors of q's size).
    forward = next(r for r in ops if (r["variant"], r["pass"], r["seq_len"]) == ("sdpa", "forward", "16"))
    both = next(
        r for r in ops if (r["variant"], r["pass"], r["seq_len"]) == ("sdpa", "forward_backward", "16")
    )
    assert int(both["floor_bytes"]) == 3 * int(forward["floor_bytes"])
    plots = sorted(path.name for path in tmp_path.glob("*.png"))
    assert plots == ["encode_lookup_cpu_fp32.png", "models_tiny_cpu_fp32.png", "ops_cpu_fp32.png"]


def test_live_tensor_bytes_sees_the_peak_of_temporaries():
    resident = torch.ones(1000)
    with LiveTensorBytes([resident]) as tracker:
        a = resident * 2  # 4000 bytes
        b = a + 1  # 8000 live
        del a, b
        c = resident.view(10, 100)  # a view of a resident tensor allocates nothing
    assert tracker.peak == 8000
    assert c.shape == (10, 100)


def test_cli_parses_lists_and_rejects_bad_values(tmp_path):
    args = build_parser().parse_args(
        [
            "bench",
            "--output_dir",
            str(tmp_path),
            "--device",
            "cpu",
            "--seq_lengths",
            "8",
            "16",
            "--dtypes",
            "fp32",
            "--repeats",
            "3",
        ]
    )
    assert tuple(args.seq_lengths) == (8, 16) and tuple(args.dtypes) == ("fp32",) and args.repeats == 3
    with pytest.raises(ValueError, match="seq_lengths must be ascending"):
        BenchConfig(output_dir=tmp_path, device="cpu", seq_lengths=(16, 8))
    with pytest.raises(ValueError, match="variants must be a non-empty subset"):
        BenchConfig(output_dir=tmp_path, device="cpu", variants=("flash",))
