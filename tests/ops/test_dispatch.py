"""The dispatcher decides once per call and says what it chose and why."""

from __future__ import annotations

import logging

import pytest
import torch

from hf_lln.ops import lln_attention
from hf_lln.ops.dispatch import explain_backend, kernel_mode, use_kernels


def _qkv():
    q = torch.randn(1, 2, 5, 16)
    return q, q.clone(), q.clone()


def test_cpu_inputs_take_the_torch_path_and_say_why():
    backend, reason = explain_backend("lln_diag", *_qkv())
    assert backend == "torch" and "cpu" in reason


def test_forcing_triton_where_it_cannot_run_raises_naming_the_reason():
    with use_kernels("triton"):
        assert kernel_mode() == "triton"
        with pytest.raises(RuntimeError, match="HF_LLN_KERNELS=triton.*cheap_linear"):
            explain_backend("cheap_linear", *_qkv())
    assert kernel_mode() != "triton"


def test_the_choice_is_logged_once_per_call(caplog):
    with caplog.at_level(logging.DEBUG, logger="hf_lln.ops.dispatch"):
        lln_attention(*_qkv())
    lines = [record.getMessage() for record in caplog.records if record.name == "hf_lln.ops.dispatch"]
    assert len(lines) == 1 and lines[0].startswith("lln: torch path")


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        with use_kernels("cuda"):
            pass
