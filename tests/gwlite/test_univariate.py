"""1-D optimal transport by sorting against the exact linear program."""

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import w1d_lp

from gwlite.coupling import marginal_error, to_dense
from gwlite.errors import GWInputError
from gwlite.univariate import monotone_coupling, wasserstein_1d

seeds = st.integers(0, 2**31 - 1)


def _sample(seed, n, m, weighted, ties):
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=n), rng.normal(size=m)
    if ties:
        u, v = np.round(u), np.round(v)
    if not weighted:
        return u, v, np.full(n, 1 / n), np.full(m, 1 / m)
    a, b = rng.random(n) + 0.01, rng.random(m) + 0.01
    return u, v, a / a.sum(), b / b.sum()


@settings(max_examples=60, deadline=None)
@given(
    seeds,
    st.integers(1, 9),
    st.integers(1, 9),
    st.booleans(),
    st.booleans(),
    st.sampled_from([1, 2, 1.5]),
)
def test_matches_linear_program(seed, n, m, weighted, ties, p):
    u, v, a, b = _sample(seed, n, m, weighted, ties)
    got = wasserstein_1d(u, v, a, b, p=p)
    assert got == pytest.approx(w1d_lp(u, v, a, b, p), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(1, 12))
def test_equal_mass_fast_path_matches_general_path(seed, n):
    u, v, a, b = _sample(seed, n, n, False, False)
    assert wasserstein_1d(u, v, p=2) == pytest.approx(wasserstein_1d(u, v, a, b, p=2), abs=1e-12)


def test_matches_scipy_w1():
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=40), rng.normal(size=25) + 0.5
    a, b = rng.random(40), rng.random(25)
    expected = scipy.stats.wasserstein_distance(u, v, a, b)
    assert wasserstein_1d(u, v, a / a.sum(), b / b.sum(), p=1) == pytest.approx(expected, rel=1e-12)


def test_batched_equals_loop():
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(4, 3, 6)), rng.normal(size=(4, 3, 8))
    A = rng.random((4, 3, 6))
    A /= A.sum(-1, keepdims=True)
    got = wasserstein_1d(U, V, A, None, p=2)
    assert got.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            expected = wasserstein_1d(U[i, j], V[i, j], A[i, j], None, p=2)
            assert got[i, j] == pytest.approx(expected, abs=1e-14)


def test_rejects_p_below_one():
    with pytest.raises(ValueError, match="p must be a finite number >= 1"):
        wasserstein_1d(np.zeros(2), np.zeros(2), p=0.5)


@settings(max_examples=60, deadline=None)
@given(seeds, st.integers(1, 9), st.integers(1, 9), st.booleans(), st.booleans())
def test_monotone_coupling_is_feasible_and_optimal(seed, n, m, weighted, ties):
    u, v, a, b = _sample(seed, n, m, weighted, ties)
    coupling = monotone_coupling(u, v, a, b, tie_tol=1e-12)
    T = to_dense(coupling)
    assert marginal_error(T, a, b) < 1e-12
    assert T.min() >= 0
    for p in (1, 2):
        cost = float(np.sum(np.abs(u[:, None] - v[None, :]) ** p * T))
        assert cost == pytest.approx(w1d_lp(u, v, a, b, p), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(2, 9), st.integers(2, 9), st.booleans())
def test_monotone_coupling_is_equivariant_under_relabelling(seed, n, m, weighted):
    # heavy ties on purpose: the spreading rule must not depend on node order
    u, v, a, b = _sample(seed, n, m, weighted, ties=True)
    rng = np.random.default_rng(seed + 1)
    pu, pv = rng.permutation(n), rng.permutation(m)
    T = to_dense(monotone_coupling(u, v, a, b))
    Tp = to_dense(monotone_coupling(u[pu], v[pv], a[pu], b[pv]))
    np.testing.assert_allclose(Tp, T[np.ix_(pu, pv)], atol=1e-15)


def test_tied_groups_share_mass_proportionally():
    u = np.array([0.0, 0.0, 1.0])
    a = np.array([0.1, 0.3, 0.6])
    v = np.array([5.0, 5.0])
    T = to_dense(monotone_coupling(u, v, a, None))
    # one group each side: the coupling is the product of the weights
    np.testing.assert_allclose(T, np.outer(a, [0.5, 0.5]), atol=1e-15)


def test_permutation_without_ties():
    u = np.array([3.0, 1.0, 2.0])
    v = np.array([10.0, 30.0, 20.0])
    coupling = monotone_coupling(u, v)
    assert coupling.is_permutation()
    T = to_dense(coupling)
    np.testing.assert_allclose(T * 3, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])


# ---------------------------------------------------------------- checks
@pytest.mark.parametrize(
    ("u", "v", "kwargs", "message"),
    [
        (np.array([0.0, np.nan]), np.array([0.0, 1.0]), {}, "u_values has non-finite"),
        (np.array([0.0, 1.0]), np.array([np.inf, 1.0]), {}, "v_values has non-finite"),
        (np.array([0.0, 1e200]), np.array([0.0, -1e200]), {"p": 2}, "too large"),
        (np.array([0.0, 1.0]), np.zeros(0), {}, "at least one sample"),
        (np.array([0.0, 1.0]) + 1j, np.array([0.0, 1.0]), {}, "complex"),
        (np.zeros(2), np.zeros(2), {"p": "2"}, "p must be a number"),
        (np.zeros(2), np.zeros(2), {"p": np.inf}, "finite number >= 1"),
        (np.zeros(2), np.zeros(3), {"u_weights": np.array([0.5, 0.6])}, "sum to 1"),
        (np.zeros(2), np.zeros(3), {"u_weights": np.array([1.5, -0.5])}, "negative"),
        (np.zeros(2), np.zeros(3), {"v_weights": np.full(2, 0.5)}, "3 nodes"),
    ],
)
def test_wasserstein_1d_refuses_bad_input(u, v, kwargs, message):
    with pytest.raises(GWInputError, match=message):
        wasserstein_1d(u, v, **kwargs)


def test_wasserstein_1d_empty_measures_give_zero():
    u, v = np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[5.0, 1.0], [0.0, 4.0]])
    a = np.array([[0.0, 0.0], [0.5, 0.5]])  # the first row has no mass
    out = wasserstein_1d(u, v, a, None, p=1)
    assert out[0] == 0.0 and out[1] == wasserstein_1d(u[1], v[1], p=1)
    assert wasserstein_1d(u, v, None, a[::-1], p=2)[1] == 0.0


def test_wasserstein_1d_takes_lists_and_integers():
    assert float(wasserstein_1d([0, 1, 2], [1, 2, 3], p=2)) == 1.0
    assert float(wasserstein_1d(np.array([0, 1]), np.array([2, 3]), p=1)) == 2.0


def test_wasserstein_1d_unchecked_is_the_same_number():
    rng = np.random.default_rng(0)
    u, v, a = rng.normal(size=5), rng.normal(size=7), rng.random(5)
    a /= a.sum()
    checked = wasserstein_1d(u, v, a, None, p=2)
    assert wasserstein_1d(u, v, a, None, p=2, check=False) == checked
