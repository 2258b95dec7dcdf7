"""The study's statistics against hand-computed cases, a simulation and their invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.demo.stats import detectable_difference, holm, paired_comparison

FAST = settings(max_examples=40, deadline=None)

# t quantiles from printed tables (two-sided 95%): df=2: 4.303, df=4: 2.776
T975 = {2: 4.302652729911275, 4: 2.7764451051977987}


def test_paired_t_test_by_hand():
    # differences 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), se sqrt(0.5), t = 3 / sqrt(0.5)
    a, b = [11, 22, 33, 44, 55], [10, 20, 30, 40, 50]
    c = paired_comparison(a, b)
    assert c.n == 5 and c.mean == pytest.approx(3.0)
    assert c.sd == pytest.approx(math.sqrt(2.5))
    assert c.se == pytest.approx(math.sqrt(0.5))
    assert c.t == pytest.approx(3 / math.sqrt(0.5))
    # two-sided p of t = 4.2426 with 4 df (tables: 0.01324)
    assert c.p == pytest.approx(0.013236, abs=2e-6)
    half = T975[4] * math.sqrt(0.5)
    assert (c.ci_low, c.ci_high) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert c.d_z == pytest.approx(3 / math.sqrt(2.5))
    assert (c.wins, c.ties, c.losses) == (5, 0, 0)


def test_paired_t_test_by_hand_with_mixed_signs():
    # differences +4, -2, +1: mean 1, sd = sqrt(((3)^2 + (-3)^2 + 0^2) / 2) = 3
    c = paired_comparison([14, 8, 11], [10, 10, 10])
    assert c.mean == pytest.approx(1.0) and c.sd == pytest.approx(3.0)
    assert c.t == pytest.approx(1 / (3 / math.sqrt(3)))
    half = T975[2] * 3 / math.sqrt(3)
    assert c.ci_low == pytest.approx(1 - half) and c.ci_high == pytest.approx(1 + half)
    assert (c.wins, c.ties, c.losses) == (2, 0, 1)
    assert 0.5 < c.p < 0.7  # t = 0.577 with 2 df: p = 0.622


def test_bootstrap_interval_of_a_known_case():
    # two pairs with differences 0 and 2: a resampled mean is 0, 1 or 2 with
    # probabilities 1/4, 1/2, 1/4, so the 95% percentile interval is [0, 2]
    c = paired_comparison([0, 2], [0, 0], n_resamples=4000)
    assert (c.boot_low, c.boot_high) == (pytest.approx(0.0), pytest.approx(2.0))
    again = paired_comparison([0, 2], [0, 0], n_resamples=4000)
    assert again == c  # seeded


def test_constant_differences_have_no_spread_to_test():
    same = paired_comparison([1, 2, 3], [1, 2, 3])
    assert same.mean == 0 and same.p == 1.0 and same.t == 0.0
    assert (same.ci_low, same.ci_high) == (0.0, 0.0) and math.isnan(same.d_z)
    up = paired_comparison([2, 3, 4], [1, 2, 3])
    assert up.p == 0.0 and up.t == math.inf and (up.ci_low, up.ci_high) == (1.0, 1.0)
    assert (up.wins, up.ties, up.losses) == (3, 0, 0)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [([1, 2], [1], "equal lengths"), ([1], [2], "at least 2"), ([1, math.nan], [1, 2], "finite")],
)
def test_bad_samples_are_refused(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_comparison(a, b)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04)
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.02, math.nan, 0.01])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


def test_detectable_difference_matches_cohens_table_and_a_simulation():
    # Cohen (1988), table 2.4.1, two-sided alpha = 0.05, power 0.8: d = 1.0 needs n = 10
    assert detectable_difference(1.0, 10) == pytest.approx(1.0, abs=0.01)
    # it scales with the spread
    assert detectable_difference(3.0, 10) == pytest.approx(3 * detectable_difference(1.0, 10))
    # simulation: a true difference of that size is detected in about 80% of studies
    from scipy import stats

    rng = np.random.default_rng(0)
    n, sd = 5, 2.0
    delta = detectable_difference(sd, n)
    diffs = rng.normal(delta, sd, size=(20000, n))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert power == pytest.approx(0.8, abs=0.015)
    with pytest.raises(ValueError):
        detectable_difference(0.0, 5)


values = st.lists(
    st.floats(min_value=-100, max_value=100, allow_nan=False, width=32), min_size=2, max_size=8
)


@FAST
@given(values, st.data())
def test_interval_properties(a, data):
    b = data.draw(
        st.lists(
            st.floats(min_value=-100, max_value=100, allow_nan=False, width=32),
            min_size=len(a),
            max_size=len(a),
        )
    )
    c = paired_comparison(a, b, n_resamples=500)
    assert c.ci_low <= c.mean <= c.ci_high
    assert 0.0 <= c.p <= 1.0
    assert c.wins + c.ties + c.losses == len(a)
    # swapping the arms flips every sign and keeps the p-value
    d = paired_comparison(b, a, n_resamples=500)
    assert d.mean == pytest.approx(-c.mean, abs=1e-9)
    assert d.p == pytest.approx(c.p, rel=1e-9, abs=1e-12)
    assert (d.ci_low, d.ci_high) == (
        pytest.approx(-c.ci_high, abs=1e-9),
        pytest.approx(-c.ci_low, abs=1e-9),
    )
    # adding the same number to both arms changes nothing
    shifted = paired_comparison([x + 7 for x in a], [y + 7 for y in b], n_resamples=500)
    assert shifted.mean == pytest.approx(c.mean, abs=1e-6)
