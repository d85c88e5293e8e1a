"""hf_lln.experiments.compare: a tiny comparison end to end on CPU, its resume, the sweep's arms and bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

import hf_lln.experiments.compare as compare
from hf_lln.experiments.compare import main, make_arms, prepare_train_file
from hf_lln.recipes.glue import averaged_tasks
from hf_lln.recipes.mlm import load_default_corpus

FIXTURES = Path(__file__).parents[1] / "fixtures" / "glue"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """Training and validation text: the first paragraphs of the bundled corpus (quick to tokenise)."""
    folder = tmp_path_factory.mktemp("text")
    paragraphs = load_default_corpus()["text"]
    (folder / "train.txt").write_text("\n".join(paragraphs[:200]) + "\n")
    (folder / "valid.txt").write_text("\n".join(paragraphs[200:260]) + "\n")
    return folder / "train.txt", folder / "valid.txt"


def tiny_flags(output_dir: Path, corpus: tuple[Path, Path], *extra: str) -> list[str]:
    train, valid = corpus
    return [
        "--scale", "tiny", "--tasks", "sst2", "--glue_dir", str(FIXTURES), "--train_file", str(train),
        "--validation_file", str(valid), "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def scratch_comparison(tmp_path_factory, corpus) -> Path:
    output_dir = tmp_path_factory.mktemp("compare")
    flags = tiny_flags(
        output_dir, corpus, "--attentions", "sdpa", "lln", "--tracks", "scratch", "--jobs", "2"
    )
    assert main(flags) == 0
    return output_dir


def test_tiny_comparison_reports_every_run_with_its_folder(scratch_comparison):
    report = (scratch_comparison / "comparison.md").read_text()
    collected = json.loads((scratch_comparison / "comparison.json").read_text())
    assert (scratch_comparison / "mlm_loss.png").stat().st_size > 0
    for attention in ("sdpa", "lln"):
        mlm_folder = scratch_comparison / "scratch" / attention / "mlm"
        mlm_results = json.loads((mlm_folder / "all_results.json").read_text())
        glue_folder = scratch_comparison / "scratch" / attention / "glue" / "seed_0" / "sst2"
        accuracy = json.loads((glue_folder / "all_results.json").read_text())["eval_accuracy"]
        rows = [line for line in report.splitlines() if line.startswith(f"| {attention} |")]
        # one MLM row and one GLUE row, each with the numbers of its own run folder
        assert len(rows) == 2
        assert f"{mlm_results['eval_loss']:.4f}" in rows[0] and "`scratch/" + attention + "/mlm`" in rows[0]
        assert f"{100 * accuracy:.2f}" in rows[1]
        entry = collected["tracks"]["scratch"][attention]
        assert (scratch_comparison / entry["mlm"]["folder"]) == mlm_folder
        assert (scratch_comparison / entry["glue"]["sst2"]["0"]["folder"]) == glue_folder
        assert entry["summary"]["sst2"]["mean"] == pytest.approx(accuracy)
        # the curve is the run's validation loss, evaluated every 2 of its 4 steps
        assert [step for step, _ in entry["mlm"]["curve"]] == [2, 4]
        assert entry["mlm"]["curve"][-1][1] == pytest.approx(mlm_results["eval_loss"])
        assert mlm_results["eval_loss"] < math.log(320)
        json_log = scratch_comparison / "logs" / f"scratch-{attention}-mlm.json"
        assert json.loads(json_log.read_text())["returncode"] == 0
    # same data, sizes and seed: both arms trained the same tokenizer
    tokenizers = [
        (scratch_comparison / "scratch" / a / "mlm" / "tokenizer.json").read_text() for a in ("sdpa", "lln")
    ]
    assert tokenizers[0] == tokenizers[1]


def test_a_finished_comparison_is_not_launched_again(scratch_comparison, corpus, capsys):
    results = scratch_comparison / "scratch" / "lln" / "mlm" / "all_results.json"
    before = results.stat().st_mtime_ns
    flags = tiny_flags(scratch_comparison, corpus, "--attentions", "sdpa", "lln", "--tracks", "scratch")
    assert main(flags) == 0
    assert ": launched, log" not in capsys.readouterr().out
    assert results.stat().st_mtime_ns == before


@pytest.mark.slow
def test_converted_track_fine_tunes_the_converted_checkpoint(tmp_path, corpus, minilm_path):
    flags = tiny_flags(tmp_path, corpus, "--attentions", "lln", "--tracks", "converted", "--adapt_steps", "0")
    assert main([*flags, "--softmax_checkpoint", str(minilm_path)]) == 0
    converted = tmp_path / "converted" / "lln" / "model"
    assert AutoConfig.from_pretrained(converted).lln_variant == "lln"
    glue_config = json.loads((tmp_path / "converted/lln/glue/seed_0/sst2/config.json").read_text())
    assert glue_config["model_type"] == "lln_bert" and glue_config["lln_variant"] == "lln"
    command = json.loads((tmp_path / "logs" / "converted-lln-glue-seed_0.json").read_text())["command"]
    assert command[command.index("--model_name_or_path") + 1] == str(converted)


def test_sweep_gives_one_arm_per_setting_combination_of_the_variants_that_read_it(tmp_path, corpus):
    arms = make_arms(
        ["sdpa", "lln", "lln_diag"], {"lln_stats": ["per_sequence", "global"], "lln_block_size": [16]}
    )
    assert [arm.name for arm in arms] == [
        "sdpa",
        "lln-stats_per_sequence",
        "lln-stats_global",
        "lln_diag-stats_per_sequence-block_16",
        "lln_diag-stats_global-block_16",
    ]
    flags = tiny_flags(
        tmp_path, corpus, "--attentions", "lln_diag", "--lln_stats", "global", "--lln_block_size", "16"
    )
    assert main([*flags, "--softmax_checkpoint", "some/bert", "--collect_only"]) == 0
    # the scratch arm's config, as run_mlm reads it
    config = AutoConfig.from_pretrained(tmp_path / "configs" / "lln_diag-stats_global-block_16")
    assert (config.model_type, config.lln_stats, config.lln_block_size) == ("lln_roberta", "global", 16)
    report = (tmp_path / "comparison.md").read_text()
    assert "Unfinished runs (5)" in report and "converted-lln_diag-stats_global-block_16-convert" in report


def test_prepare_train_file_joins_files_as_utf8_with_unix_newlines(tmp_path):
    (tmp_path / "a.txt").write_bytes("caf\u00e9\r\nline".encode())
    (tmp_path / "b.txt").write_bytes("na\u00efve\n".encode("latin-1"))
    joined = prepare_train_file([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "data")
    assert joined.read_text(encoding="utf-8") == "caf\u00e9\nline\nna\u00efve\n"
    before = joined.stat().st_mtime_ns
    prepare_train_file([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "data")
    assert joined.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attentions", "softmax"], "--attentions"),
        (["--attentions", "lln", "lln"], "--attentions"),
        (["--tasks", "wnli"], "WNLI does not exist"),
        (["--tasks", "sst3"], "--tasks"),
        (["--seeds", "1", "1"], "--seeds"),
        (["--jobs", "0"], "--jobs"),
        (["--lln_block_size", "0"], "--lln_block_size"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, corpus, extra, message):
    glue = tmp_path / "glue"
    (glue / "SST-2").mkdir(parents=True)
    flags = tiny_flags(tmp_path / "out", corpus, "--tracks", "scratch")
    flags[flags.index("--glue_dir") + 1] = str(glue)
    with pytest.raises(ValueError, match=message):
        main([*flags, *extra])
    assert not (tmp_path / "out").exists()


def test_converted_track_needs_a_checkpoint(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(compare.arguments, "default_softmax_checkpoint", lambda: None)
    with pytest.raises(ValueError, match="--softmax_checkpoint"):
        main(tiny_flags(tmp_path / "out", corpus, "--tracks", "converted"))


def test_gpu_minutes_pretrains_in_bf16_and_fine_tunes_in_float32(tmp_path, corpus):
    flags = tiny_flags(tmp_path, corpus, "--attentions", "lln", "--softmax_checkpoint", "some/bert")
    flags[flags.index("tiny")] = "gpu-minutes"
    args = compare.build_parser().parse_args(flags)
    compare.check_arguments(args)
    runs = {run.name: run.command for run in compare.plan_comparison(args).runs}

    def precision(command):
        return command[command.index("--mixed_precision") + 1]

    assert precision(runs["scratch-lln-mlm"]) == "bf16"
    assert precision(runs["converted-lln-mlm"]) == "no"
    assert precision(runs["scratch-lln-glue-seed_0"]) == "no"


@pytest.mark.parametrize(
    "tasks, averaged",
    [
        (["cola", "sst2", "mrpc", "wnli"], ("cola", "sst2", "mrpc")),
        (["wnli"], ("wnli",)),
        (["sst2"], ("sst2",)),
    ],
)
def test_the_glue_average_leaves_wnli_out_when_other_tasks_are_there(tasks, averaged):
    assert averaged_tasks(tasks) == averaged


def test_runs_launch_the_recipes_as_modules(tmp_path, corpus):
    """No file of a checkout: "python -m" by default, "accelerate launch ... -m" with --launcher."""
    flags = tiny_flags(tmp_path, corpus, "--attentions", "lln", "--tracks", "scratch")
    for launcher, prefix in [
        (None, (sys.executable,)),
        ("accelerate launch --cpu", ("accelerate", "launch", "--cpu")),
    ]:
        args = compare.build_parser().parse_args(flags + (["--launcher", launcher] if launcher else []))
        compare.check_arguments(args)
        commands = {run.name: run.command for run in compare.plan_comparison(args).runs}
        assert commands["scratch-lln-mlm"][: len(prefix) + 2] == (*prefix, "-m", "hf_lln.recipes.run_mlm")
        assert commands["scratch-lln-glue-seed_0"][: len(prefix) + 2] == (
            *prefix,
            "-m",
            "hf_lln.recipes.run_glue",
        )


def test_python_m_runs_the_comparison_from_any_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "hf_lln.experiments.compare", "--help"]
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "--launcher" in completed.stdout
