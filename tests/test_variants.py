"""The variant registry: every row complete and consistent with the config schema and the operators."""

from __future__ import annotations

import pytest
import torch

from hf_lln.models.configuration_lln import LLN_SETTINGS_DEFAULTS
from hf_lln.variants import ATTENTION_VARIANTS, VARIANTS, check_attn_implementation, description, get_variant


@pytest.mark.parametrize("name", ATTENTION_VARIANTS)
def test_each_row_reads_only_config_fields_and_its_options_run_its_op_and_reference(name):
    row = VARIANTS[name]
    assert set(row.settings) <= set(LLN_SETTINGS_DEFAULTS) and row.description
    options = row.options(LLN_SETTINGS_DEFAULTS, 8, 1)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    if row.takes_scale:
        options["scale"] = 0.3
    fast, dense = row.op(q, k, v, None, **options), row.reference(q, k, v, None, **options)
    torch.testing.assert_close(fast, dense, rtol=1e-9, atol=1e-9)


def test_misspelt_names_get_a_close_match_and_the_list():
    with pytest.raises(
        ValueError, match="'lln_diagg' is not an attention implementation.*Did you mean 'lln_diag'"
    ):
        get_variant("lln_diagg", "attn_implementation")
    with pytest.raises(ValueError, match="'lln', .*softmax implementations eager, sdpa"):
        check_attn_implementation("softmax")
    check_attn_implementation("sdpa")
    assert "softmax" in description("sdpa") and "LLN" in description("lln")
