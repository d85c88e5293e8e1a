"""Thin entry point: ``hf_lln.experiments.kernel_resources`` (``python -m hf_lln.experiments.kernel_resources --help``)."""

from hf_lln.experiments.kernel_resources import main

raise SystemExit(main())
