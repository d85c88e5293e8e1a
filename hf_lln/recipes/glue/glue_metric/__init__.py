"""The folder of the ``glue_metric`` evaluate module: ``evaluate.load(<this folder>, task)`` loads
``glue_metric.py`` by path, offline (see :mod:`hf_lln.recipes.glue.metrics`). Nothing here is imported."""
