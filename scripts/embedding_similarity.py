"""Thin entry point: ``hf_lln.experiments.embedding_similarity`` (``python -m hf_lln.experiments.embedding_similarity --help``)."""

from hf_lln.experiments.embedding_similarity import main

raise SystemExit(main())
