"""Thin entry point: ``hf_lln.experiments.transfer_study`` (``python -m hf_lln.experiments.transfer_study --help``)."""

from hf_lln.experiments.transfer_study import main

raise SystemExit(main())
