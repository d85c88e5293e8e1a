"""The instruments on hand-built matrices whose answers are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from hf_lln.experiments.analysis import instruments


def uniform(n: int) -> torch.Tensor:
    return torch.full((n, n), 1.0 / n, dtype=torch.float64)


def permutation(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64)[torch.randperm(n, generator=torch.Generator().manual_seed(0))]


def test_uniform_rows_have_entropy_log_n_and_gap_one():
    p = uniform(16)
    torch.testing.assert_close(
        instruments.row_entropy(p), torch.full((16,), math.log(16), dtype=torch.float64)
    )
    assert instruments.spectral_gap(p).item() == pytest.approx(1.0, abs=1e-9)
    assert instruments.column_mass_entropy(p).item() == pytest.approx(math.log(16))
    assert math.isnan(instruments.concentration_bias(p).item())
    assert instruments.log_attention_variance(p).item() == pytest.approx(0.0, abs=1e-20)


def test_identity_and_permutation_rows_have_entropy_zero_gap_zero_and_no_bias():
    for p in (torch.eye(12, dtype=torch.float64), permutation(12)):
        torch.testing.assert_close(instruments.row_entropy(p), torch.zeros(12, dtype=torch.float64))
        assert instruments.spectral_gap(p).item() == pytest.approx(0.0, abs=1e-9)
        assert instruments.column_mass_entropy(p).item() == pytest.approx(math.log(12))
        assert instruments.concentration_bias(p).item() == pytest.approx(0.0, abs=1e-12)


def test_every_query_on_the_same_keys_is_fully_biased():
    row = torch.tensor([0.7, 0.2, 0.1, 0.0, 0.0, 0.0], dtype=torch.float64)
    p = row.expand(6, 6)
    expected_entropy = -(row[:3] * row[:3].log()).sum().item()
    assert instruments.row_entropy(p).mean().item() == pytest.approx(expected_entropy)
    assert instruments.spectral_gap(p).item() == pytest.approx(1.0, abs=1e-9)
    assert instruments.concentration_bias(p).item() == pytest.approx(1.0)


def test_partly_shared_keys_give_the_shared_share_of_the_entropy_drop():
    # Rows 0-1 one-hot on key 0, rows 2-3 one-hot on key 1: row entropy 0, column mass (1/2, 1/2, 0, 0).
    p = torch.zeros(4, 4, dtype=torch.float64)
    p[:2, 0] = 1.0
    p[2:, 1] = 1.0
    assert instruments.concentration_bias(p).item() == pytest.approx(
        (math.log(4) - math.log(2)) / math.log(4)
    )


def test_groups_of_queries_on_their_own_keys_are_unbiased_with_gap_zero():
    # Rows 0-1 uniform on keys {0, 1}, rows 2-3 on keys {2, 3}: two closed classes, eigenvalues 1, 1, 0, 0.
    p = torch.zeros(4, 4, dtype=torch.float64)
    p[:2, :2] = 0.5
    p[2:, 2:] = 0.5
    assert instruments.row_entropy(p).mean().item() == pytest.approx(math.log(2))
    assert instruments.spectral_gap(p).item() == pytest.approx(0.0, abs=1e-9)
    assert instruments.concentration_bias(p).item() == pytest.approx(0.0, abs=1e-12)


def test_spectral_gap_of_a_two_state_chain():
    # [[1-a, a], [b, 1-b]] has eigenvalues 1 and 1 - a - b.
    p = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=torch.float64)
    assert instruments.spectral_gap(p).item() == pytest.approx(1 - 0.6)


def test_batched_leading_dimensions_are_kept():
    p = torch.stack([uniform(8), torch.eye(8, dtype=torch.float64)]).unsqueeze(0)  # (1, 2, 8, 8)
    torch.testing.assert_close(instruments.spectral_gap(p), torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert instruments.row_entropy(p).shape == (1, 2, 8)


def lognormal_rows(n: int, sigma: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.exp(sigma * torch.randn(n, n, generator=generator, dtype=torch.float64))
    return weights / weights.sum(-1, keepdim=True)


def test_log_variance_recovers_the_generating_sigma():
    p = lognormal_rows(400, sigma=1.5, seed=1)
    assert instruments.log_attention_variance(p).item() == pytest.approx(1.5**2, rel=0.03)


def test_a_lognormal_sample_passes_the_fit_and_a_non_lognormal_one_fails():
    fit = instruments.lognormal_fit(lognormal_rows(120, sigma=2.0, seed=2))
    assert fit["ks_statistic"] < 0.02
    assert fit["p_value"] > 0.01
    assert abs(fit["skewness"]) < 0.1 and abs(fit["excess_kurtosis"]) < 0.2

    generator = torch.Generator().manual_seed(3)
    weights = torch.rand(120, 120, generator=generator, dtype=torch.float64)  # log of uniform: skewed
    bad = instruments.lognormal_fit(weights / weights.sum(-1, keepdim=True))
    assert bad["ks_statistic"] > 0.08
    assert bad["p_value"] < 1e-6


def test_summarize_on_a_permutation():
    summary = instruments.summarize(permutation(10) * 0.9 + 0.01)
    assert summary["seq_len"] == 10
    assert summary["spectral_gap"] < 0.2
    assert summary["concentration_bias"] == pytest.approx(0.0, abs=1e-9)
    assert 0 < summary["row_entropy_normalised"] < 0.5


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (torch.full((3, 3), 0.5), "sum to 1"),
        (torch.tensor([[1.5, -0.5], [0.5, 0.5]]), "non-negative"),
        (torch.ones(3), "shape"),
    ],
)
def test_non_stochastic_input_is_rejected(matrix, message):
    with pytest.raises(ValueError, match=message):
        instruments.row_entropy(matrix)


def test_spectral_gap_needs_a_square_matrix():
    with pytest.raises(ValueError, match="square"):
        instruments.spectral_gap(torch.full((2, 4), 0.25))
