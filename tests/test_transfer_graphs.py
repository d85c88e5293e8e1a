"""Layer-by-layer transfer steps replayed from CUDA graphs (``hf_lln.transfer.graphs``): the same training as the
eager steps, on batches of several lengths and sizes."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from transformers import get_scheduler

from hf_lln.transfer import TransferSettings, transfer_attention
from hf_lln.transfer.graphs import PAD_MULTIPLE, GraphedSteps
from hf_lln.transfer.loop import TransferRun
from tests._tiny import TINY
from tests.test_transfer import tiny_pair


def test_graphed_steps_need_a_capturable_optimizer():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight])
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedSteps(lambda mask, hidden: [hidden[0].sum()], optimizer, None, 1)


def mixed_batches(seed=0):
    """Five batches of 3 or 4 texts whose lengths fall on both sides of the padding multiple, a row of each
    padded."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for batch, seq in ((4, 12), (4, PAD_MULTIPLE + 3), (3, PAD_MULTIPLE - 1), (4, 2 * PAD_MULTIPLE), (4, 12)):
        ids = torch.randint(5, TINY["vocab_size"], (batch, seq), generator=generator)
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1, seq // 2 :] = 0
        batches.append({"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask})
    return batches


@pytest.mark.gpu
def test_graphed_steps_follow_the_eager_steps_and_the_learning_rate_schedule():
    """A toy loss per group, on inputs of changing shapes: the replayed steps (padded, captured once per shape, the
    learning rate read from the device) give the weights of plain AdamW steps with per-group clipping."""
    device = torch.device("cuda")
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 10), (4, 40), (3, 31), (4, 10), (4, 64), (3, 31), (4, 40), (4, 10)]
    data = [
        (torch.randn(2, b, s, 8, generator=generator), torch.rand(b, s, generator=generator) > 0.2)
        for b, s in shapes
    ]
    start = [torch.randn(8, 8, generator=generator) for _ in range(2)]

    def losses_of(weights):
        def losses(mask, hidden):
            real = mask.to(hidden[0].dtype)
            return [
                (((hidden[index] @ weight).tanh().sum(-1) - 1) ** 2 * real).sum() / real.sum()
                for index, weight in enumerate(weights)
            ]

        return losses

    results = []
    for graphed in (False, True):
        weights = [torch.nn.Parameter(w.clone().to(device)) for w in start]
        optimizer = torch.optim.AdamW(
            [{"params": [w]} for w in weights], lr=0.05, fused=graphed, capturable=graphed
        )
        scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=len(data))
        losses = losses_of(weights)

        def clip(weights=weights):
            for weight in weights:
                torch.nn.utils.clip_grad_norm_([weight], 0.5)

        steps = GraphedSteps(losses, optimizer, clip, 2) if graphed else None
        for index, (hidden, mask) in enumerate(data):
            hidden, mask = hidden.to(device), mask.to(device)
            if steps is not None and index > 0:
                steps.step(mask, hidden.unbind())
            else:
                torch.stack(losses(mask, hidden.unbind())).sum().backward()
                clip()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        if steps is not None:
            assert len(steps.captured) == 3  # the first step is eager; then (4, 64), (3, 32), (4, 32)
            steps.close()
        results.append([w.detach().cpu() for w in weights])
    for first, eager, replayed in zip(start, *results, strict=True):
        assert not torch.equal(eager, first)
        torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("variant", "train", "mixed_precision"),
    [("lln", "qk", "no"), ("lln_diag", "qk", "bf16"), ("lln", "lora", "bf16")],
)
def test_a_graphed_transfer_trains_as_the_eager_one(monkeypatch, variant, train, mixed_precision):
    """The layer steps through CUDA graphs (one capture per batch shape, every later step a replay) train the
    student as the eager steps do."""
    captures, replays = [], [0]
    capture, step = GraphedSteps._capture, GraphedSteps.step

    def counted_capture(self, captured):
        captures.append(tuple(captured.hidden.shape[1:3]))
        return capture(self, captured)

    def counted_step(self, mask, hidden_states):
        replays[0] += 1
        return step(self, mask, hidden_states)

    monkeypatch.setattr(GraphedSteps, "_capture", counted_capture)
    monkeypatch.setattr(GraphedSteps, "step", counted_step)
    settings = TransferSettings(steps=12, end_to_end_steps=0, learning_rate=1e-2, eval_batches=2, train=train)
    results = []
    for graphs in (False, True):
        monkeypatch.setattr(TransferRun, "cuda_graphs", graphs)
        shape = {"hidden_size": 64, "num_attention_heads": 2, "max_position_embeddings": 2 * PAD_MULTIPLE}
        teacher, student = tiny_pair(variant, shape=shape)
        AcceleratorState._reset_state(True)
        accelerator = Accelerator(mixed_precision=mixed_precision)
        report = transfer_attention(teacher, student, mixed_batches(), settings, accelerator=accelerator)
        results.append((report, {name: t.cpu() for name, t in student.state_dict().items()}))
    AcceleratorState._reset_state(True)
    assert sorted(set(captures)) == [(3, 32), (4, 32), (4, 64)] and len(captures) == 3
    assert replays[0] == settings.steps - 1
    (eager, eager_weights), (graphed, graphed_weights) = results
    assert sum(eager.layer_after) < 0.9 * sum(
        eager.layer_before
    )  # LoRA starts at zero: slower (0.84 on an H200)
    tolerance = 1e-4 if mixed_precision == "no" else 2e-2
    assert graphed.layer_after == pytest.approx(eager.layer_after, rel=tolerance)
    for name, tensor in eager_weights.items():
        torch.testing.assert_close(
            graphed_weights[name], tensor, rtol=tolerance, atol=tolerance / 10, msg=name
        )


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("variant", "overrides", "mixed_precision", "expected"),
    [
        ("lln", {}, "bf16", True),
        ("lln_diag", {}, "no", True),
        ("lln", {}, "fp16", False),
        ("lln", {"query_fraction": 0.5}, "bf16", False),
        ("lln", {"loss": "output"}, "bf16", False),
        ("performer", {"loss": "weights"}, "bf16", False),
        ("lln", {"train": "lora"}, "bf16", True),
        ("lln", {"train": "qk_temperature"}, "bf16", False),
    ],
)
def test_which_transfers_replay_from_graphs(variant, overrides, mixed_precision, expected):
    teacher, student = tiny_pair(variant)
    AcceleratorState._reset_state(True)
    settings = TransferSettings(steps=1, end_to_end_steps=0, **overrides)
    run = TransferRun.prepared(teacher, student, settings, Accelerator(mixed_precision=mixed_precision))
    graphable, stage = run.graphable(), run.stages()[0]
    AcceleratorState._reset_state(True)
    assert graphable is expected
    assert (stage.graph_losses is not None) is expected
