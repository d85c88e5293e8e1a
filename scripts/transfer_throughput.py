"""Thin entry point: ``hf_lln.experiments.transfer_throughput`` (``python -m hf_lln.experiments.transfer_throughput --help``)."""

from hf_lln.experiments.transfer_throughput import main

raise SystemExit(main())
