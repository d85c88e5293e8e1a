"""``python -m hf_lln.experiments.compare``: the comparison from an installed package (usage: ``--help``)."""

from hf_lln.experiments.compare import main

raise SystemExit(main())
