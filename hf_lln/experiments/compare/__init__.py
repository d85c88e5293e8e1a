"""The quality comparison of attentions: the same pretraining and GLUE fine-tuning for every attention, run through
the project's own recipes (``hf_lln.recipes.run_mlm``, ``hf_lln.recipes.run_glue``, ``hf-lln convert``) as
subprocesses, gathered into one table, one loss-curve plot and one JSON.

``python -m hf_lln.experiments.compare --help`` (or ``scripts/compare.py`` in a checkout). An arm is an attention
plus the ``lln_*`` settings swept for it (``lln_diag-stats_global-block_32``); every run of an arm shares seeds,
data, model size and steps with the other arms. Runs already finished are skipped, so an interrupted comparison
resumes where it stopped. Method and the choice of defaults: docs/quality.md.

Modules, one step each: :mod:`.scales` (sizes per ``--scale``), :mod:`.arguments` (command line and checks),
:mod:`.arms` and :mod:`.data` (what the runs get), :mod:`.plan` (folders and commands), :mod:`.launch`
(subprocesses), :mod:`.collect` (what the runs wrote), :mod:`.report` and :mod:`.plot` (the outputs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hf_lln.experiments.compare.arguments import build_parser, check_arguments
from hf_lln.experiments.compare.arms import Arm, make_arms
from hf_lln.experiments.compare.data import prepare_train_file
from hf_lln.experiments.compare.launch import launch
from hf_lln.experiments.compare.plan import Comparison, Run, plan_comparison
from hf_lln.experiments.compare.report import write_report
from hf_lln.experiments.compare.scales import SCALES, Scale

__all__ = [
    "SCALES",
    "Arm",
    "Comparison",
    "Run",
    "Scale",
    "build_parser",
    "check_arguments",
    "launch",
    "main",
    "make_arms",
    "plan_comparison",
    "prepare_train_file",
    "write_report",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Plan, launch (unless ``--collect_only``) and report; exit code 1 when a run failed."""
    args = build_parser().parse_args(argv)
    check_arguments(args)
    comparison = plan_comparison(args)
    statuses = {} if args.collect_only else launch(comparison, args.jobs)
    write_report(comparison)
    failed = [name for name, status in statuses.items() if status in ("failed", "blocked")]
    if failed:
        print(f"{len(failed)} runs failed or were blocked: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
