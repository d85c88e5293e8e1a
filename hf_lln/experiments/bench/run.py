"""A whole benchmark run: every suite of a :class:`BenchConfig`, in order."""

from __future__ import annotations

from collections.abc import Callable

from hf_lln.experiments.bench.cases import CaseRunner
from hf_lln.experiments.bench.config import BenchConfig
from hf_lln.experiments.bench.encode_lookup_suite import run_encode_lookup
from hf_lln.experiments.bench.models_suite import run_models
from hf_lln.experiments.bench.ops_suite import run_ops
from hf_lln.experiments.bench.output import write_summaries

# One per name of config.SUITES.
SUITE_RUNNERS: dict[str, Callable[[CaseRunner], None]] = {
    "ops": run_ops,
    "models": run_models,
    "encode_lookup": run_encode_lookup,
}


def run_benchmark(config: BenchConfig) -> list[dict]:
    """Run every suite of ``config`` and return the rows. ``benchmark.csv`` grows row by row; ``benchmark.md``
    and the PNG plots are rewritten after each suite, so a run cut short keeps the tables and plots of the
    suites it finished."""
    runner = CaseRunner(config)
    for suite in config.suites:
        SUITE_RUNNERS[suite](runner)
        write_summaries(runner.rows, config.output_dir)
    return runner.rows
