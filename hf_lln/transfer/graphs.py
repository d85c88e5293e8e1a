"""Layer-by-layer transfer steps replayed from CUDA graphs.

On a GPU a layer step is bound by the host, not by the GPU: Python launches about 290 kernels (the stacked layer
losses, their backward, the per-layer clipping, AdamW) for 4-5 ms of GPU work (an H200, MiniLM, MRPC batches of 32,
bf16: 11 ms a step). ``GraphedSteps`` captures that whole step once per batch shape and replays it as one launch.
A batch is right-padded to the next multiple of ``PAD_MULTIPLE`` tokens (the extra positions are masked out like
any padding; the hidden states are the layers' inputs, so right padding leaves the real tokens' values as they
are), so a handful of graphs covers every length of a task. The learning rates live in device tensors the graphs
read, refreshed from the optimizer's groups (which the scheduler sets) before each replay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

PAD_MULTIPLE = 32
# Runs of a new shape before its capture, on a side stream: lazy set-up (cuBLAS workspaces, autograd's streams)
# must not happen inside a capture. PyTorch's make_graphed_callables uses three too.
WARMUP_RUNS = 3


@dataclass
class _Captured:
    """One shape's graph and the tensors it reads and writes: ``hidden: (inputs, batch, length, hidden)``, ``mask:
    (batch, length)``, the per-group ``losses`` and every parameter's gradient (written on each replay; held here so
    that the memory stays the graph's)."""

    graph: torch.cuda.CUDAGraph
    hidden: torch.Tensor
    mask: torch.Tensor
    losses: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor | None] = field(default_factory=list)


class GraphedSteps:
    """Training steps ``losses(mask, hidden_states) -> one loss per parameter group``, then backward, ``clip()`` and
    ``optimizer.step()``, each shape's captured in a CUDA graph on its first use and replayed after.

    ``hidden_states``: the step's first ``inputs`` tensors ``(batch, seq, hidden)``; ``mask: (batch, seq)``. The
    optimizer must be built with ``capturable=True`` and must have stepped once eagerly (its state is allocated
    then; allocated inside a capture, it would be reset at every replay). Nothing in ``losses`` may read a value
    back to the host or draw random numbers."""

    def __init__(
        self,
        losses: Callable[[torch.Tensor, Sequence[torch.Tensor]], list[torch.Tensor]],
        optimizer: torch.optim.Optimizer,
        clip: Callable[[], None] | None,
        inputs: int,
    ):
        if not all(group.get("capturable") for group in optimizer.param_groups):
            raise ValueError("optimizer must be built with capturable=True to be replayed from a CUDA graph")
        self.losses, self.optimizer, self.clip, self.inputs = losses, optimizer, clip, inputs
        self.params = [param for group in optimizer.param_groups for param in group["params"]]
        device = self.params[0].device
        self.learning_rates = [torch.zeros((), device=device) for _ in optimizer.param_groups]
        self.captured: dict[tuple, _Captured] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def step(self, mask: torch.Tensor, hidden_states: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One training step on a batch; returns the per-group losses (the graph's outputs, overwritten by the next
        step)."""
        batch, seq = mask.shape
        length = -(-seq // PAD_MULTIPLE) * PAD_MULTIPLE
        first = hidden_states[0]
        key = (batch, length, first.shape[-1], first.dtype, mask.dtype)
        captured = self.captured.get(key)
        if captured is None:
            captured = _Captured(
                torch.cuda.CUDAGraph(),
                first.new_zeros(self.inputs, batch, length, first.shape[-1]),
                mask.new_zeros(batch, length),
            )
            self._load(captured, mask, hidden_states)
            self._capture(captured)
            self.captured[key] = captured
        else:
            self._load(captured, mask, hidden_states)
        for rate, group in zip(self.learning_rates, self.optimizer.param_groups, strict=True):
            rate.fill_(group["lr"])
        captured.graph.replay()
        return captured.losses

    def _load(self, captured: _Captured, mask: torch.Tensor, hidden_states: Sequence[torch.Tensor]) -> None:
        seq = mask.shape[1]
        captured.hidden[:, :, :seq].copy_(torch.stack(list(hidden_states[: self.inputs])))
        captured.hidden[:, :, seq:].zero_()
        captured.mask.zero_()
        captured.mask[:, :seq].copy_(mask)

    def _run(self, captured: _Captured) -> list[torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.losses(captured.mask, captured.hidden.unbind())
        torch.stack(losses).sum().backward()
        return losses

    def _capture(self, captured: _Captured) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._run(captured)
            self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.current_stream().wait_stream(side)
        # the graph must read the learning rates from memory, not hold the floats of the capture's step
        groups = self.optimizer.param_groups
        rates = [group["lr"] for group in groups]
        for group, rate in zip(groups, self.learning_rates, strict=True):
            group["lr"] = rate
        try:
            with torch.cuda.graph(captured.graph, pool=self.pool):
                losses = self._run(captured)
                if self.clip is not None:
                    self.clip()
                self.optimizer.step()
        finally:
            for group, rate in zip(groups, rates, strict=True):
                group["lr"] = rate
        captured.losses = [loss.detach() for loss in losses]
        captured.grads = [param.grad for param in self.params]

    def close(self) -> None:
        """Free the graphs and their memory; the parameters' gradients are set to None."""
        self.optimizer.zero_grad(set_to_none=True)
        self.captured.clear()
