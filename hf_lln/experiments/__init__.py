"""Experiment harnesses: benchmarks, the quality comparison and the paper's analysis instruments."""
