"""Thin entry point: ``hf_lln.experiments.bench_kernels`` (``python -m hf_lln.experiments.bench_kernels --help``)."""

from hf_lln.experiments.bench_kernels import main

raise SystemExit(main())
