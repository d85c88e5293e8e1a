"""Thin entry point: ``hf_lln.experiments.mlm_throughput`` (``python -m hf_lln.experiments.mlm_throughput --help``)."""

from hf_lln.experiments.mlm_throughput import main

raise SystemExit(main())
