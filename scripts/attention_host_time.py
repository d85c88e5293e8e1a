"""Thin entry point: ``hf_lln.experiments.attention_host_time`` (``python -m hf_lln.experiments.attention_host_time --help``)."""

from hf_lln.experiments.attention_host_time import main

raise SystemExit(main())
