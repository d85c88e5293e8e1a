"""Thin entry point: ``hf_lln.experiments.fit_moment_constants`` (``python -m hf_lln.experiments.fit_moment_constants --help``)."""

from hf_lln.experiments.fit_moment_constants import main

raise SystemExit(main())
