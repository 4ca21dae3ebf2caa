"""Seed statistics without scipy: Student-t quantiles, summaries over seeds (mean, sample std,
95% t-interval) and paired differences against a baseline.

Used by the ablation report (`minillm_jax.experiments.ablation`); pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping

import numpy as np


# ---------------------------------------------------------------------------------------------
# Student-t quantiles (no scipy)
#
# Seed counts are small (3-10), where the normal 1.96 badly understates the interval (df=2 needs
# 4.303), so the t quantile matters. Rather than a table that jumps from 2.042 (df=30) to 1.96,
# the t CDF is computed exactly from the regularized incomplete beta function
# (P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2), continued fraction as in Numerical Recipes §6.4,
# accurate to ~1e-14) and inverted by bisection, which is monotone and cannot fail to converge.
# The tests check it against the textbook table (df 1..30) and closed forms for df=1 and df=2.


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom (df > 0, need not be an integer)."""
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


@lru_cache(maxsize=256)
def t_critical(df: float, level: float = 0.95) -> float:
    """Two-sided critical value: t with P(|T| <= t) = level (12.706 for df=1 at 95%).

    Solved by bisection on x = df / (df + t^2), on which the two-sided tail I_x(df/2, 1/2) is
    increasing. Non-integer df is fine; very large (or infinite) df tends to the normal value.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if df <= 0 or math.isnan(df):
        raise ValueError(f"df must be positive, got {df}")
    # Beyond 1e7 df, t differs from the normal quantile by < 3e-7 while the continued fraction
    # (which needs O(sqrt(df)) terms) starts to lose accuracy: clamp.
    df = min(float(df), 1e7)
    alpha = 1.0 - level
    lo, hi = 0.0, 1.0  # tail(lo) = 0 < alpha < 1 = tail(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _betainc(df / 2.0, 0.5, mid) < alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-17 + 1e-15 * hi:
            break
    x = 0.5 * (lo + hi)
    return math.sqrt(df * (1.0 - x) / x)


# ---------------------------------------------------------------------------------------------
# Summaries


@dataclass(frozen=True)
class Summary:
    """Mean of n values with sample std (ddof=1), standard error and 95% t-interval half-width.

    n=1 gives std 0 but sem and ci95 NaN: one seed says nothing about seed noise, and a zero
    interval would claim certainty. Non-finite values (a diverged seed) are kept, so they show
    up as NaN instead of silently vanishing.
    """

    n: int
    mean: float
    std: float
    sem: float
    ci95: float

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


@dataclass(frozen=True)
class PairedDifference(Summary):
    """Summary of per-seed differences variant - baseline, plus which seeds were paired/dropped."""

    seeds: tuple[int, ...] = ()
    dropped_seeds: tuple[int, ...] = ()

    @property
    def n_dropped(self) -> int:
        return len(self.dropped_seeds)

    @property
    def excludes_zero(self) -> bool:
        """True when the 95% CI lies entirely on one side of 0 (the difference is resolved)."""
        return math.isfinite(self.ci95) and (self.low > 0 or self.high < 0)


def _summary_fields(values: Iterable[float]) -> dict[str, Any]:
    arr = np.asarray(list(values), dtype=float)
    n = int(arr.size)
    if n == 0:
        nan = float("nan")
        return dict(n=0, mean=nan, std=nan, sem=nan, ci95=nan)
    mean = float(arr.mean())
    if n == 1:
        return dict(n=1, mean=mean, std=0.0, sem=float("nan"), ci95=float("nan"))
    std = float(arr.std(ddof=1))
    sem = std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, sem=sem, ci95=t_critical(n - 1) * sem)


def summarize(values: Iterable[float]) -> Summary:
    """Mean, sample std, sem and 95% CI half-width (t with n-1 df) of values (e.g. over seeds)."""
    return Summary(**_summary_fields(values))


def paired_difference(variant_values_by_seed: Mapping[int, float],
                      baseline_values_by_seed: Mapping[int, float]) -> PairedDifference:
    """Summary of variant - baseline over the seeds both have (pairing removes shared seed noise).

    Seeds present on one side only are dropped and listed in `dropped_seeds`.
    """
    seeds = sorted(set(variant_values_by_seed) & set(baseline_values_by_seed))
    dropped = sorted(set(variant_values_by_seed) ^ set(baseline_values_by_seed))
    diffs = [float(variant_values_by_seed[s]) - float(baseline_values_by_seed[s]) for s in seeds]
    return PairedDifference(**_summary_fields(diffs), seeds=tuple(seeds),
                            dropped_seeds=tuple(dropped))
