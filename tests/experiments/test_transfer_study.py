"""hf_lln.experiments.transfer_study: the attention-transfer study harness, on a tiny BERT and the GLUE fixtures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hf_lln.experiments import transfer_study
from tests._tiny import character_bert
from tests.recipes.test_commands import help_text

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "glue"

NO_DATASETS = """
import runpy, sys
sys.modules["datasets"] = None  # the GPU machine has no datasets: importing it must not be needed
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_script_hands_over_to_the_module_without_datasets(tmp_path):
    script = str(ROOT / "scripts" / "transfer_study.py")
    usage = help_text([sys.executable, "-c", NO_DATASETS, script], tmp_path)
    assert "--model_name_or_path" in usage and "--zeroshot_arms" in usage


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return character_bert(tmp_path_factory.mktemp("tiny_bert"), sharp=True)


def test_both_parts_run_resume_and_report(tiny_bert, tmp_path, capsys):
    flags = [
        *("--scale", "cpu", "--model_name_or_path", str(tiny_bert), "--glue_dir", str(FIXTURES)),
        *("--output_dir", str(tmp_path), "--variants", "lln", "--zeroshot_arms", "none", "qk-weights"),
        *(
            "--arms",
            "plain",
            "transfer-tiny+distill-hidden",
            "--tasks",
            "mrpc",
            "--seeds",
            "0",
            "--sentences",
            "4",
        ),
        *("--transfer_steps", "3", "--threads", "1"),
    ]
    assert transfer_study.main(flags) == 0
    written = sorted(
        path.relative_to(tmp_path).as_posix()
        for part in ("finetune", "zeroshot")
        for path in (tmp_path / part).iterdir()
    )
    assert written == [
        "finetune/mrpc-lln-plain-seed0.json",
        "finetune/mrpc-lln-transfer-tiny+distill-hidden-seed0.json",
        "finetune/mrpc-teacher-seed0.json",
        "zeroshot/lln-none-seed0.json",
        "zeroshot/lln-qk-weights-seed0.json",
    ]
    transferred = json.loads((tmp_path / "zeroshot" / "lln-qk-weights-seed0.json").read_text())
    assert transferred["transfer"]["settings"]["steps"] == 3 and -1 <= transferred["cosine_mean"] <= 1
    student = json.loads(
        (tmp_path / "finetune" / "mrpc-lln-transfer-tiny+distill-hidden-seed0.json").read_text()
    )
    assert 0 <= student["agreement"] <= 100 and "transferred_score" in student
    assert student["transfer"]["settings"]["steps"] == 20  # a third of the CPU scale's 60
    report = (tmp_path / "report.md").read_text()
    assert "| lln | qk-weights |" in report and "| mrpc | lln | transfer-tiny+distill-hidden |" in report
    capsys.readouterr()
    assert transfer_study.main(flags) == 0  # a rerun skips every finished arm
    assert "done" not in capsys.readouterr().out


def test_arms_keep_their_settings_and_the_default_arm_is_the_library_default():
    """Arms pin the settings the study began with, whatever TransferSettings' defaults become; the arm the docs
    call the default is TransferSettings() itself (at the GPU scale the study ran)."""
    from hf_lln.transfer import TransferSettings

    gpu = transfer_study.SCALES["gpu"]
    first = transfer_study.zero_shot_settings("qk-weights-e2e", gpu, seed=0)
    assert (first.learning_rate, first.end_to_end_loss, first.end_to_end_train, first.mixed_lengths) == (
        1e-3,
        "final",
        "attention",
        False,
    )
    default = transfer_study.zero_shot_settings("default-x2", gpu, seed=0)
    assert default == TransferSettings(
        loss="weights"
    )  # "auto" resolves to the weight loss for LLN and LLN+Diag


def test_an_arm_config_sets_the_student_attention(tiny_bert):
    """``FinetuneArm.config``: the student is the LLN class with those settings; without it, the stock class with
    the settings of a conversion (heads of 64 here: blocks of 64)."""
    spec = transfer_study.FINETUNE_ARMS["transfer+e2elayersall+distill-block32"]
    student = transfer_study.classifier(tiny_bert, "lln_diag", 0, spec.config)
    assert type(student).__name__ == "LLNBertForSequenceClassification"
    assert (student.config.lln_variant, student.config.lln_block_size) == ("lln_diag", 32)
    assert student.config.num_labels == 2
    stock = transfer_study.classifier(tiny_bert, "lln_diag", 0)
    assert type(stock).__name__ == "BertForSequenceClassification"
    assert stock.config._attn_implementation == "lln_diag"


def test_the_fine_tuned_conversion_default_is_an_arm():
    """run_glue --teacher_model_name_or_path's defaults are arm transfer-lr3e-3+distill-hidden3 at the GPU scale."""
    from hf_lln.recipes.glue.teacher import DEFAULTS

    spec = transfer_study.FINETUNE_ARMS["transfer-lr3e-3+distill-hidden3"]
    steps = transfer_study.SCALES["gpu"].task_transfer_steps
    arm = {
        "distill_alpha": spec.distill_alpha,
        "distill_temperature": transfer_study.DISTILL_TEMPERATURE,
        "distill_hidden_weight": spec.hidden_weight,
        "transfer_steps": round(spec.transfer_factor * steps),
        "transfer_end_to_end_steps": round(spec.end_to_end_factor * steps),
        "transfer_learning_rate": dict(spec.transfer)["learning_rate"],
    }
    assert arm == {name: DEFAULTS[name] for name in arm}
