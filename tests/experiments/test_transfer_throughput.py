"""hf_lln.experiments.transfer_throughput: the table of transfer step times, on a tiny BERT."""

from __future__ import annotations

import pytest

from hf_lln.experiments import transfer_throughput
from tests.test_transfer import FIXTURE_SENTENCES, tiny_checkpoint


def table_rows(output: str) -> list[list[str]]:
    rows = [line.split("|")[1:-1] for line in output.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]


def run_table(tmp_path, capsys, *flags) -> list[list[str]]:
    src = tiny_checkpoint(tmp_path / "bert")
    text = tmp_path / "texts.txt"
    text.write_text("\n".join(FIXTURE_SENTENCES * 4))
    argv = [
        "--model_name_or_path",
        str(src),
        "--text",
        str(text),
        "--steps",
        "2",
        "--warmup_steps",
        "1",
        *flags,
    ]
    assert transfer_throughput.main(argv) == 0
    return table_rows(capsys.readouterr().out)


def test_every_variant_and_stage_is_timed(tmp_path, capsys):
    rows = run_table(tmp_path, capsys, "--variants", "lln", "cheap_linear")
    assert [row[:2] for row in rows] == [
        ["lln", "layer"],
        ["lln", "end_to_end"],
        ["cheap_linear", "layer"],
        ["cheap_linear", "end_to_end"],
    ]
    assert all(float(row[2]) > 0 and len(row) == 3 for row in rows)  # no profile columns without CUDA


def test_teacher_cache_is_off_unless_asked(tmp_path, capsys, monkeypatch):
    """Without ``--teacher_cache`` every timed step runs the teacher; with it, the run keeps a cache."""
    budgets = []
    prepared = transfer_throughput.TransferRun.prepared

    def spy(*args, teacher_cache_bytes, **kwargs):
        budgets.append(teacher_cache_bytes)
        return prepared(*args, teacher_cache_bytes=teacher_cache_bytes, **kwargs)

    monkeypatch.setattr(transfer_throughput.TransferRun, "prepared", spy)
    run_table(tmp_path / "off", capsys, "--variants", "lln")
    rows = run_table(tmp_path / "on", capsys, "--variants", "lln", "--teacher_cache")
    assert budgets == [0, transfer_throughput.TEACHER_CACHE_BYTES] and len(rows) == 2


@pytest.mark.gpu
def test_profile_counts_launches_on_cuda(tmp_path, capsys):
    rows = run_table(tmp_path, capsys, "--variants", "lln_diag", "--profile", "--profile_steps", "2")
    assert len(rows) == 2
    for row in rows:
        ms, device_ms, launches = float(row[2]), float(row[3]), float(row[4].replace(",", ""))
        assert ms > 0 and device_ms > 0 and launches > 10


def test_bad_flags_are_refused(capsys):
    for flags, message in [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--warmup_steps", "-1"], "--warmup_steps must be >= 0"),
    ]:
        with pytest.raises(SystemExit):
            transfer_throughput.parse_args(["--model_name_or_path", "m", *flags])
        assert message in capsys.readouterr().err
