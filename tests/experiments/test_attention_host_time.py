"""``hf_lln.experiments.attention_host_time``: one row per implementation and dropout it takes, with the host's
and the wall time per call (CPU, tiny shapes)."""

from __future__ import annotations

from hf_lln.experiments import attention_host_time


def test_rows_per_implementation_and_the_dropout_it_takes(capsys):
    argv = "--batch 2 --seq 24 --heads 2 --head_dim 16 --repeats 2 --calls 2 --warmup 1".split()
    assert attention_host_time.main([*argv, "--dropouts", "0", "0.2"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header, *rows = rows
    assert [cell.strip() for cell in header][:2] == ["attention", "dropout"]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        ("sdpa", "0"),
        ("sdpa", "0.2"),
        ("lln", "0"),  # LLN has no attention probabilities to drop
        ("lln_diag", "0"),
        ("lln_diag", "0.2"),
    ]
    for row in rows:
        forward, backward, host, wall = (float(cell) for cell in row[2:])
        assert forward > 0 and backward > 0 and 0 < host <= wall
