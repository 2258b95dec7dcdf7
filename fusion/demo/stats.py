r"""Paired comparisons of two training recipes over seeds.

Two arms of one cell share, seed by seed, the initialisation, the warm start, the data
order and the held-out items, so the unit of comparison is the per-seed difference
:math:`d_s = a_s - b_s` (in accuracy points). For :math:`n` seeds, with mean
:math:`\bar d` and sample standard deviation :math:`s_d`:

.. math::

    t = \frac{\bar d}{s_d / \sqrt n}, \qquad
    \bar d \pm t_{0.975,\,n-1}\, \frac{s_d}{\sqrt n}, \qquad
    d_z = \frac{\bar d}{s_d},

the paired t-test (two-sided, :func:`scipy.stats.ttest_rel`), its 95% interval and the
standardised effect (Cohen's :math:`d_z`). A percentile bootstrap of :math:`\bar d`
(:func:`scipy.stats.bootstrap`, seeded) gives a second interval that does not assume
normal differences; with five seeds it is narrower than it should be (five values
resample into few distinct means), so the t interval is the one to read. The smallest
difference the design detects with 80% power, given the observed :math:`s_d`, comes from
the noncentral t distribution of the statistic. :func:`holm` adjusts the p-values of many cells for
multiple testing.

References
----------
- J. Cohen, *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed., 1988.
- S. Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist.
  6 (1979) 65-70.
- B. Efron and R. Tibshirani, *An Introduction to the Bootstrap*, 1993.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PairedComparison", "detectable_difference", "holm", "paired_comparison"]


@dataclass(frozen=True)
class PairedComparison:
    """Paired comparison of arm ``a`` against arm ``b`` (differences ``a - b``).

    Attributes
    ----------
    n : int
        Pairs (seeds).
    mean, sd, se : float
        Mean, sample standard deviation and standard error of the differences.
    t : float
        Paired t statistic (``inf`` with the sign of ``mean`` when every difference is
        the same non-zero value, up to rounding; 0 when all are 0).
    p : float
        Two-sided p-value of the paired t-test.
    ci_low, ci_high : float
        ``confidence`` t interval of the mean difference.
    boot_low, boot_high : float
        Percentile bootstrap interval of the mean difference.
    d_z : float
        ``mean / sd`` (``nan`` when ``sd == 0``).
    detectable : float
        Smallest true mean difference that a two-sided test at 5% detects with 80%
        power with ``n`` pairs of this ``sd`` (``nan`` when ``sd == 0``).
    wins, ties, losses : int
        Seeds where ``a`` is above, equal to, below ``b``.
    confidence : float
    """

    n: int
    mean: float
    sd: float
    se: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    d_z: float
    detectable: float
    wins: int
    ties: int
    losses: int
    confidence: float = 0.95

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def _check_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[list[float], list[float]]:
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs, got {len(a)}")
    if not all(math.isfinite(x) for x in a + b):
        raise ValueError("paired samples must be finite numbers")
    return a, b


def detectable_difference(sd: float, n: int, *, power: float = 0.8, alpha: float = 0.05) -> float:
    r"""Smallest true mean difference a two-sided paired t-test detects with ``power``.

    Solves :math:`P(|T| > t_{1-\alpha/2,\,n-1}) = \text{power}` for :math:`\delta`, where
    :math:`T` follows the noncentral t distribution with :math:`n-1` degrees of freedom
    and noncentrality :math:`\delta \sqrt n / s_d`.

    Parameters
    ----------
    sd : float
        Standard deviation of the differences, ``> 0``.
    n : int
        Pairs, ``>= 2``.
    power, alpha : float
        In ``(0, 1)``.

    Returns
    -------
    float
        In the units of ``sd``.

    Examples
    --------
    >>> round(detectable_difference(1.0, 10), 2)  # Cohen's tables: d = 1.00 for n = 10
    1.0
    """
    from scipy import integrate, optimize, special, stats

    if not (sd > 0 and math.isfinite(sd)) or n < 2:
        raise ValueError(f"need sd > 0 and n >= 2, got sd={sd}, n={n}")
    if not (0 < power < 1 and 0 < alpha < 1):
        raise ValueError(f"power and alpha must lie in (0, 1), got {power}, {alpha}")
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    log_norm = -special.gammaln(df / 2) - (df / 2) * math.log(2)

    def chi2_pdf(v: float) -> float:
        return math.exp(log_norm + (df / 2 - 1) * math.log(v) - v / 2) if v > 0 else 0.0

    def rejection(effect: float) -> float:
        # T = (Z + nc) / sqrt(V / df), V ~ chi2(df): integrate P(|T| > crit | V) over V
        # (scipy's nct loses precision for one degree of freedom and large nc)
        nc = effect * math.sqrt(n)

        def given(v: float) -> float:
            c = crit * math.sqrt(v / df)
            return (special.ndtr(nc - c) + special.ndtr(-c - nc)) * chi2_pdf(v)

        return integrate.quad(given, 0, math.inf, limit=200)[0]

    high = 1.0
    while rejection(high) < power:  # the power grows with the effect: bracket the root
        high *= 2
    return sd * optimize.brentq(lambda e: rejection(e) - power, 0.0, high, xtol=1e-10)


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare paired measurements ``a`` and ``b`` (e.g. two arms' accuracies per seed).

    Parameters
    ----------
    a, b : sequence of float
        Equal lengths, at least 2, finite.
    confidence : float
        Level of both intervals.
    n_resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the bootstrap (the result is deterministic).

    Returns
    -------
    PairedComparison

    Raises
    ------
    ValueError
        For unequal lengths, fewer than 2 pairs or non-finite values.

    Examples
    --------
    >>> c = paired_comparison([3, 4, 5, 6, 7], [2, 2, 2, 2, 2])
    >>> c.mean, round(c.t, 4), round(c.p, 5), round(c.ci_low, 4), round(c.ci_high, 4)
    (3.0, 4.2426, 0.01324, 1.0368, 4.9632)
    """
    import numpy as np
    from scipy import stats

    a, b = _check_pairs(a, b)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    diffs = np.asarray(a) - np.asarray(b)
    n = len(diffs)
    mean = float(diffs.mean())
    sd = float(diffs.std(ddof=1))
    se = sd / math.sqrt(n)
    wins, losses = int((diffs > 0).sum()), int((diffs < 0).sum())
    scale = 1e-12 * max(1.0, *map(abs, a), *map(abs, b))
    if sd <= scale:  # every difference equal, up to rounding (e.g. 1/3 - 1/3 in points)
        sd = se = 0.0
        mean = 0.0 if abs(mean) <= scale else mean
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0 else 0.0
        ci = boot = (mean, mean)
        d_z = detectable = math.nan
    else:
        test = stats.ttest_rel(a, b)
        t, p = float(test.statistic), float(test.pvalue)
        interval = test.confidence_interval(confidence_level=confidence)
        ci = (float(interval.low), float(interval.high))
        res = stats.bootstrap(
            (diffs,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        boot = (float(res.confidence_interval.low), float(res.confidence_interval.high))
        d_z = mean / sd
        detectable = detectable_difference(sd, n)
    return PairedComparison(
        n=n,
        mean=mean,
        sd=sd,
        se=se,
        t=t,
        p=p,
        ci_low=ci[0],
        ci_high=ci[1],
        boot_low=boot[0],
        boot_high=boot[1],
        d_z=d_z,
        detectable=detectable,
        wins=wins,
        ties=n - wins - losses,
        losses=losses,
        confidence=confidence,
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (family-wise error rate).

    The ``i``-th smallest of ``m`` p-values is multiplied by ``m - i`` (``i`` from 0),
    made non-decreasing along that order, and capped at 1; ``nan`` entries are left out
    of the family and stay ``nan``.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    indexed = [(p, i) for i, p in enumerate(pvalues) if not math.isnan(p)]
    for p, _ in indexed:
        if not 0 <= p <= 1:
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    out = [math.nan] * len(pvalues)
    running = 0.0
    m = len(indexed)
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
