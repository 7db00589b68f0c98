"""Paired tests on per-query results of two systems scored on the same queries.

Every function takes the two systems' per-query values in the same query order. Differences
are ``b - a`` (the second system against the first). Resampling draws come from a
``numpy.random.Generator`` the caller seeds, so every p-value and interval is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLE_BLOCK = 1000  # resamples drawn at once: bounds memory at 1000 x queries indices


@dataclass(frozen=True)
class Interval:
    delta: float  # mean difference b - a
    low: float
    high: float


def mcnemar_exact(hits_a: np.ndarray, hits_b: np.ndarray) -> float:
    """Two-sided exact McNemar test: binomial test of the discordant queries at p = 1/2.

    ``hits_a``/``hits_b``: 0/1 per query. 1.0 when no query is discordant."""
    a, b = _pair(hits_a, hits_b)
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise ValueError("McNemar's test needs 0/1 hits per query")
    only_a = int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)


def sign_flip_test(values_a: np.ndarray, values_b: np.ndarray, resamples: int,
                   rng: np.random.Generator) -> float:
    """Two-sided paired randomisation test of the mean difference: each query's difference
    keeps or flips its sign at random; p = (1 + #{|resampled mean| >= |observed|}) /
    (1 + resamples). 1.0 when the two systems agree on every query."""
    a, b = _pair(values_a, values_b)
    diff = b - a
    if not np.any(diff):
        return 1.0
    observed = abs(diff.mean())
    tolerance = 1e-12 * max(1.0, observed)  # a resample equal to the observed mean counts
    extreme = 0
    for size in _blocks(resamples):
        signs = rng.integers(0, 2, size=(size, len(diff)), dtype=np.int8) * 2 - 1
        extreme += int(np.sum(np.abs(signs @ diff) / len(diff) >= observed - tolerance))
    return (1 + extreme) / (1 + resamples)


def bootstrap_interval(values_a: np.ndarray, values_b: np.ndarray, resamples: int,
                       rng: np.random.Generator, confidence: float = 0.95) -> Interval:
    """Paired bootstrap percentile interval of the mean difference ``b - a``: the queries are
    resampled with replacement, the same draw for both systems."""
    a, b = _pair(values_a, values_b)
    diff = b - a
    if len(diff) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    means = np.concatenate([diff[rng.integers(0, len(diff), size=(size, len(diff)))].mean(1)
                            for size in _blocks(resamples)])
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(diff.mean()), float(low), float(high))


def benjamini_hochberg(p_values) -> np.ndarray:
    """BH-adjusted p-values (q-values) over the whole family."""
    p = np.asarray(p_values, dtype=float)
    return stats.false_discovery_control(p, method="bh") if len(p) else p


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need the same queries, got shapes {a.shape} and {b.shape}")
    return a, b


def _blocks(total: int):
    if total < 1:
        raise ValueError(f"resamples must be >= 1, got {total}")
    for start in range(0, total, RESAMPLE_BLOCK):
        yield min(RESAMPLE_BLOCK, total - start)
