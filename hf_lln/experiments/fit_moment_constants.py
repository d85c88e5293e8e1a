"""Fit the moment-matching constants ``(a, b)`` of LLN attention for each head size, by simulation.

For unit Gaussian queries ``x`` and keys ``y`` of ``head_dim`` channels, LLN with ``alpha s_q = beta s_k = s~``
has log attention ``logsumexp_c(s~ x_ic + s~ y_jc)`` up to the row normaliser. Its variance over keys,
averaged over queries, is measured on a grid of ``s~``; the line ``2 a s~^2 + b`` is then fitted by least
squares on a uniform grid of ``s~`` spanning the LLN variances ``--variance_range`` (the softmax variances to
be matched; default 0.25 to 4, softmax logit std 0.5 to 2). Each query gets its own keys so that the
estimate averages over rows x keys independent pairs. Also printed: the matching error, the RMS over
softmax variances in the range of (LLN's variance at the matched ``s~``) - (softmax's), for the fit and for
the paper's head-size-64 constants. ``--write`` puts the table into ``hf_lln/ops/moments.py`` (the head
size 64 keeps the paper's constants). See docs/moment_matching.md.

    OMP_NUM_THREADS=1 python -m hf_lln.experiments.fit_moment_constants --head_dims 32 64 --rows 512
    python -m hf_lln.experiments.fit_moment_constants --head_dims 64 --variance_range 0.005 4.5   # the paper's fit
    python -m hf_lln.experiments.fit_moment_constants --write                                     # the whole table
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch

from hf_lln.ops import moments

TABLE_HEAD_DIMS = (4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 100, 112, 128, 144, 160, 192, 224, 256)
S_TILDE_STEP = 1 / 8
FIT_POINTS = 15
ERROR_POINTS = 8


def lln_log_attention_variance(s_tilde: float, queries: torch.Tensor, keys: torch.Tensor) -> float:
    """Mean over queries of the variance over keys of LLN's log attention at ``alpha s_q = beta s_k = s_tilde``.

    queries: (rows, 1, head_dim), keys: (rows, keys_per_row, head_dim), both unit Gaussian.
    """
    return float(torch.logsumexp(s_tilde * (queries + keys), dim=-1).var(dim=-1).mean())


def variance_curve(
    head_dim: int, rows: int, keys: int, max_variance: float, min_s_tilde: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """LLN's variance of log attention on the grid ``s~ = 0, 1/8, ...``.

    The grid goes on past ``max_variance`` (by a quarter, room for the fitted line's matched ``s~``) and
    past ``min_s_tilde``.
    """
    generator = torch.Generator().manual_seed(seed + head_dim)
    queries = torch.randn(rows, 1, head_dim, generator=generator)
    keys_ = torch.randn(rows, keys, head_dim, generator=generator)
    s_grid, variances = [0.0], [0.0]
    while variances[-1] <= 1.25 * max_variance or s_grid[-1] < min_s_tilde:
        s_grid.append(s_grid[-1] + S_TILDE_STEP)
        variances.append(lln_log_attention_variance(s_grid[-1], queries, keys_))
    return np.array(s_grid), np.array(variances)


def fit_line(
    s_grid: np.ndarray, variances: np.ndarray, variance_range: tuple[float, float]
) -> tuple[float, float, float, float]:
    """Least-squares ``(a, b)`` of ``variance = 2 a s~^2 + b`` over the ``s~`` spanning ``variance_range``.

    Returns ``(a, b, s_low, s_high)``. Values between grid points are interpolated in ``s~^2``.
    """
    s_low, s_high = np.interp(variance_range, variances, s_grid)
    s_fit = np.linspace(s_low, s_high, FIT_POINTS)
    design = np.stack([2 * s_fit**2, np.ones_like(s_fit)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.interp(s_fit**2, s_grid**2, variances), rcond=None)
    return float(a), float(b), float(s_low), float(s_high)


def matching_error(
    s_grid: np.ndarray,
    variances: np.ndarray,
    constants: tuple[float, float],
    variance_range: tuple[float, float],
) -> float:
    """RMS over softmax variances in ``variance_range`` (uniform in std) of LLN's minus softmax's variance."""
    a, b = constants
    target = np.linspace(*np.sqrt(variance_range), ERROR_POINTS) ** 2
    matched_s2 = np.clip((target - b) / (2 * a), 0, None)
    return float(np.sqrt(np.mean((np.interp(matched_s2, s_grid**2, variances) - target) ** 2)))


def write_table(table: dict[int, tuple[float, float]]) -> Path:
    """Replace the ``MOMENT_CONSTANTS`` literal in hf_lln/ops/moments.py by ``table``."""
    path = Path(moments.__file__)
    rows = "".join(f"    {d}: ({a!r}, {b!r}),\n" for d, (a, b) in sorted(table.items()))
    literal = f"MOMENT_CONSTANTS: dict[int, tuple[float, float]] = {{\n{rows}}}\n"
    source, count = re.subn(
        r"^MOMENT_CONSTANTS: dict\[int, tuple\[float, float\]\] = \{\n.*?^\}\n",
        lambda _: literal,
        path.read_text(),
        flags=re.DOTALL | re.MULTILINE,
    )
    if count != 1:
        raise RuntimeError(f"found {count} MOMENT_CONSTANTS literals in {path}, expected 1")
    path.write_text(source)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--head_dims", type=int, nargs="+", default=list(TABLE_HEAD_DIMS))
    parser.add_argument("--rows", type=int, default=4096, help="simulated queries per head size")
    parser.add_argument("--keys", type=int, default=16, help="simulated keys per query")
    parser.add_argument("--variance_range", type=float, nargs=2, default=(0.25, 4.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--write", action="store_true", help="update MOMENT_CONSTANTS in hf_lln/ops/moments.py"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.variance_range[0] < args.variance_range[1]:
        parser.error(f"--variance_range must be 0 <= LOW < HIGH, got {args.variance_range}")
    if args.rows < 1 or args.keys < 2:
        parser.error(f"--rows must be >= 1 and --keys >= 2, got {args.rows} and {args.keys}")
    variance_range = tuple(args.variance_range)
    paper = moments.PAPER_CONSTANTS[64]
    paper_s_tilde = np.sqrt((variance_range[1] - paper[1]) / (2 * paper[0]))

    fitted = {}
    print(
        f"{'head_dim':>8} {'a':>8} {'b':>8} {'s~ range':>13} {'err fit':>8} {'err paper':>9} {'seconds':>7}"
    )
    for head_dim in args.head_dims:
        start = time.perf_counter()
        s_grid, variances = variance_curve(
            head_dim, args.rows, args.keys, variance_range[1], paper_s_tilde, args.seed
        )
        a, b, s_low, s_high = fit_line(s_grid, variances, variance_range)
        fitted[head_dim] = (round(a, 5), round(b, 5))
        errors = [matching_error(s_grid, variances, c, variance_range) for c in ((a, b), paper)]
        print(
            f"{head_dim:>8} {a:8.5f} {b:8.5f} {s_low:6.3f}-{s_high:6.3f} {errors[0]:8.4f} {errors[1]:9.4f} "
            f"{time.perf_counter() - start:7.1f}"
        )
    if 64 in fitted:
        (a, b), (a_paper, b_paper) = fitted[64], paper
        print(
            f"head_dim 64: fit a={a:.5f} b={b:.5f}, paper a={a_paper:.5f} b={b_paper:.5f} "
            f"(a {100 * (a / a_paper - 1):+.1f}%, b {100 * (b / b_paper - 1):+.1f}%)"
        )
    table = {**moments.MOMENT_CONSTANTS, **fitted, **moments.PAPER_CONSTANTS}
    print("MOMENT_CONSTANTS = {")
    for head_dim, (a, b) in sorted(table.items()):
        print(f"    {head_dim}: ({a!r}, {b!r}),")
    print("}")
    if args.write:
        print(f"wrote {write_table(table)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
