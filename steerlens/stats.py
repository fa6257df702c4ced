"""Paired bootstrap intervals over prompts (scipy's BCa bootstrap): how far a prompt set pins a figure down."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def paired_interval(base: Sequence[float], steered: Sequence[float], statistic: str = "ratio",
                    level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval (scipy, BCa) of ``mean(steered) / mean(base)`` (``statistic="ratio"``) or
    ``mean(steered) - mean(base)`` (``"difference"``), resampling prompts paired: a prompt's two scores
    move together."""
    from scipy.stats import bootstrap

    if len(base) != len(steered) or len(base) < 2:
        raise ValueError("Need one steered score per base score, and at least two")
    if statistic == "ratio":
        def stat(b, s, axis=-1):
            return s.mean(axis) / b.mean(axis)
    elif statistic == "difference":
        def stat(b, s, axis=-1):
            return s.mean(axis) - b.mean(axis)
    else:
        raise ValueError(f"statistic must be 'ratio' or 'difference', not {statistic!r}")
    if np.array_equal(np.asarray(base, float), np.asarray(steered, float)):  # no change: the interval is a point
        point = 1.0 if statistic == "ratio" else 0.0
        return point, point
    res = bootstrap((list(base), list(steered)), stat, paired=True, vectorized=True, confidence_level=level,
                    n_resamples=4000, rng=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def perplexity_ratio_interval(base_nll: Sequence[float], base_count: Sequence[int], nll: Sequence[float],
                              count: Sequence[int], level: float = 0.95, seed: int = 0,
                              n_resamples: int = 4000) -> tuple[float, float, float]:
    """The ratio of two corpus perplexities over the same prompts, ``exp(sum nll / sum count)``, steered over
    base, with a paired percentile bootstrap interval over prompts. Returns (ratio, low, high)."""
    arrays = [np.asarray(x, dtype=float) for x in (base_nll, base_count, nll, count)]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays) or n < 2:
        raise ValueError("Need per-prompt NLL and token counts for both runs, the same prompts, at least two")

    def ratio(idx: np.ndarray) -> np.ndarray:
        bn, bc, sn, sc = (a[idx] for a in arrays)
        return np.exp(sn.sum(-1) / np.maximum(sc.sum(-1), 1) - bn.sum(-1) / np.maximum(bc.sum(-1), 1))

    point = float(ratio(np.arange(n)[None])[0])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    low, high = np.quantile(ratio(idx), [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)
