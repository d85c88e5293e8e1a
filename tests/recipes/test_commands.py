"""The recipes as commands: ``python -m`` from any folder (what an installed package offers) and the checkout's
thin scripts, which only hand over to them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def help_text(command: list[str], cwd: Path) -> str:
    # PYTHONPATH: this checkout's hf_lln (not an installed copy); the checkout's scripts/ stays off the path
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.parametrize(
    ("module", "flag"),
    [("hf_lln.recipes.run_mlm", "--config_name"), ("hf_lln.recipes.run_glue", "--task_name")],
)
def test_python_m_runs_from_any_folder(tmp_path, module, flag):
    assert flag in help_text([sys.executable, "-m", module, "--help"], tmp_path)


@pytest.mark.parametrize(("script", "flag"), [("run_mlm", "--config_name"), ("glue_sweep", "--attentions")])
def test_the_scripts_hand_over_to_the_recipes(tmp_path, script, flag):
    assert flag in help_text([sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--help"], tmp_path)
