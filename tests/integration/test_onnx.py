"""The legacy ONNX exporter: no tracer warnings from hf_lln's input checks, and the exported graph (dynamic batch
and length) gives the model's outputs at a length other than the traced one."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from transformers import BertConfig, BertModel

import hf_lln
from tests._tiny import TINY

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


class _LastHiddenState(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@pytest.mark.parametrize("variant", hf_lln.ATTENTION_VARIANTS)
def test_export_has_no_tracer_warnings_from_hf_lln_and_matches_onnxruntime(variant):
    torch.manual_seed(0)
    model = _LastHiddenState(BertModel(BertConfig(**TINY, attn_implementation=variant)).eval())
    ids = torch.randint(0, TINY["vocab_size"], (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    buffer = io.BytesIO()
    axes = {0: "batch", 1: "seq"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            model,
            (ids, mask),
            buffer,
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes},
        )
    ours = [
        f"{w.filename}:{w.lineno}"
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning) and "hf_lln" in w.filename
    ]
    assert ours == []
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    other_ids = torch.randint(0, TINY["vocab_size"], (3, 7))
    other_mask = torch.ones(3, 7, dtype=torch.long)
    other_mask[2, 5:] = 0
    (exported,) = session.run(None, {"input_ids": other_ids.numpy(), "attention_mask": other_mask.numpy()})
    with torch.no_grad():
        expected = model(other_ids, other_mask)
    real = other_mask.bool()
    torch.testing.assert_close(torch.from_numpy(exported)[real], expected[real], rtol=1e-4, atol=1e-4)
