"""The paper's instruments (Nahshan et al., ICLR 2024): what an attention implementation does to its matrix.

- :mod:`~hf_lln.experiments.analysis.instruments`: distribution (variance of log attention, log-normal fit) and
  concentration (row entropy, spectral gap, biased vs unbiased concentration) of one matrix.
- :mod:`~hf_lln.experiments.analysis.matrices`: each implementation's attention matrix from q and k.
- :mod:`~hf_lln.experiments.analysis.capture`: q, k, v and the attention output of every layer of a Transformers model.
- :mod:`~hf_lln.experiments.analysis.report` and :mod:`~hf_lln.experiments.analysis.plots`: side-by-side JSON, table and PNGs
  (``hf-lln analyze``, :mod:`~hf_lln.experiments.analysis.cli`).
"""

from hf_lln.experiments.analysis.instruments import (
    column_mass_entropy,
    concentration_bias,
    log_attention_variance,
    lognormal_fit,
    row_entropy,
    spectral_gap,
    summarize,
)
from hf_lln.experiments.analysis.matrices import attention_matrix, is_row_stochastic, variant_of

__all__ = [
    "attention_matrix",
    "column_mass_entropy",
    "concentration_bias",
    "is_row_stochastic",
    "log_attention_variance",
    "lognormal_fit",
    "row_entropy",
    "spectral_gap",
    "summarize",
    "variant_of",
]
