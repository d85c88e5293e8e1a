"""Thin entry point: ``hf_lln.experiments.precision_report`` (``python -m hf_lln.experiments.precision_report --help``)."""

from hf_lln.experiments.precision_report import main

raise SystemExit(main())
