"""What a benchmark run measures: the suites, variants, dtypes, passes and sizes, and the timing policy."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import torch

from hf_lln.experiments.bench.measure import Timing
from hf_lln.variants import ATTENTION_VARIANTS

SUITES = ("ops", "models", "encode_lookup")
PASSES = ("forward", "forward_backward")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The softmax rows this harness times: the written-out formula and PyTorch's fused kernels.
TIMED_SOFTMAX = ("eager", "sdpa")
ENCODE_LOOKUP_VARIANTS = ("lln", "cheap_linear")

# Encoder sizes of the models suite: name -> (model_type, config fields).
MODEL_SIZES = {
    "bert-base": (
        "bert",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
    "roberta-base": (
        "roberta",
        dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            vocab_size=50265,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
    ),
    "tiny": (
        "bert",
        dict(
            hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, vocab_size=128
        ),
    ),
}


@dataclasses.dataclass
class BenchConfig:
    """What to run. ``seq_lengths`` ascending; ``tokens_per_batch`` tokens per call
    (``batch = max(1, tokens_per_batch // seq_len)``). Field names are the ``hf-lln bench`` flags'."""

    output_dir: Path
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    suites: tuple[str, ...] = SUITES
    variants: tuple[str, ...] = TIMED_SOFTMAX + ATTENTION_VARIANTS
    dtypes: tuple[str, ...] = tuple(DTYPES)
    passes: tuple[str, ...] = PASSES
    seq_lengths: tuple[int, ...] = (512, 1024, 2048, 4096, 8192, 16384, 32768)
    tokens_per_batch: int = 32768
    model_sizes: tuple[str, ...] = ("bert-base", "roberta-base")
    queries: tuple[int, ...] = (1, 64, 1024)
    warmup: int = Timing.warmup
    min_repeats: int = Timing.min_repeats
    max_repeats: int = Timing.max_repeats
    time_budget: float = Timing.time_budget
    memory_limit_gib: float = 8.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        check_subset("suites", self.suites, SUITES)
        check_subset("variants", self.variants, TIMED_SOFTMAX + ATTENTION_VARIANTS)
        check_subset("dtypes", self.dtypes, tuple(DTYPES))
        check_subset("passes", self.passes, PASSES)
        check_subset("model_sizes", self.model_sizes, tuple(MODEL_SIZES))
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available")
        for name in ("seq_lengths", "queries"):
            values = getattr(self, name)
            if not values or any(int(v) < 1 for v in values) or list(values) != sorted(values):
                raise ValueError(f"{name} must be ascending positive integers, got {values}")
        if self.tokens_per_batch < 1:
            raise ValueError(f"tokens_per_batch must be >= 1, got {self.tokens_per_batch}")
        if self.memory_limit_gib <= 0:
            raise ValueError(f"memory_limit_gib must be > 0, got {self.memory_limit_gib}")
        _ = self.timing  # Timing checks the warm-up and repeat fields

    @property
    def timing(self) -> Timing:
        """The warm-up and repeat policy of every timed call."""
        return Timing(self.warmup, self.min_repeats, self.max_repeats, self.time_budget)


def check_subset(name: str, values: Iterable[str], allowed: tuple[str, ...]) -> None:
    """``ValueError`` unless ``values`` is a non-empty subset of ``allowed``."""
    values = tuple(values)
    unknown = [v for v in values if v not in allowed]
    if not values or unknown:
        raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values}")
