"""gwlite.psd: the permutation-optimum certificate, its slack, and the rank-one bounds."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gwlite
from gwlite.families import generate
from gwlite.psd import (
    centred_definiteness,
    centred_eigenvalues,
    permutation_certificate,
    rank_one_bounds,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def perm_optimum(C, D):
    return min(
        float(np.mean((C - D[np.ix_(s, s)]) ** 2))
        for s in map(list, itertools.permutations(range(len(C))))
    )


def cost(C, D, T):
    L = (C[:, None, :, None] - D[None, :, None, :]) ** 2
    return float(np.einsum("ijkl,ij,kl->", L, T, T))


def coupling_costs(C, D, seed, p=None, q=None, starts=6):
    """Costs of conditional-gradient couplings from random starts (POT, not gwlite)."""
    n, m = len(C), len(D)
    p = np.full(n, 1 / n) if p is None else p
    q = np.full(m, 1 / m) if q is None else q
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(starts):
        G0 = ot.sinkhorn(p, q, rng.uniform(size=(n, m)), 0.2, numItermax=5000, stopThr=1e-12)
        G0 = G0 / G0.sum(axis=1, keepdims=True) * p[:, None]
        T = ot.gromov.gromov_wasserstein(C, D, p, q, G0=G0, max_iter=200)
        out.append(cost(C, D, T))
    return out


@pytest.mark.parametrize(
    ("family", "expected"),
    [("gram", "psd"), ("coactivation", "psd"), ("euclidean", "nsd"), ("tree_metric", "nsd")],
)
def test_family_definiteness(family, expected):
    for seed in range(3):
        assert centred_definiteness(generate(family, 9, seed)[0]) == expected


def test_definiteness_edge_cases():
    assert centred_definiteness(np.full((4, 4), 3.0)) == "zero"
    two_k2 = np.zeros((4, 4))
    two_k2[[0, 1, 2, 3], [1, 0, 3, 2]] = 1
    assert centred_definiteness(two_k2) == "indefinite"
    assert centred_definiteness(np.array([[0.0, 1.0], [0.0, 0.0]])) == "indefinite"


def test_centred_eigenvalues_drop_the_constant_direction():
    X = np.random.default_rng(0).normal(size=(6, 2))
    C = X @ X.T
    P = np.eye(6) - 1 / 6
    full = np.linalg.eigvalsh(P @ C @ P)
    lam = centred_eigenvalues(C)
    assert lam.shape == (5,)
    # PCP has the same spectrum plus one 0 for the vector of ones
    np.testing.assert_allclose(np.sort(np.append(lam, 0.0)), full, atol=1e-12)


def test_certificate_on_the_swap_counterexample():
    cert = permutation_certificate(np.array([[0.0, 1.0], [1.0, 0.0]]), np.eye(2))
    assert not cert.holds
    assert cert.definiteness == ("nsd", "psd")
    # best permutation 1, GW 0.5: the slack must cover the difference
    assert 1.0 - cert.slack <= 0.5


@st.composite
def small_pairs(draw, kinds=("gram", "euclidean", "uniform")):
    n = draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    out = []
    for kind in (draw(st.sampled_from(kinds)), draw(st.sampled_from(kinds))):
        X = rng.normal(size=(n, draw(st.integers(1, 3))))
        if kind == "gram":
            out.append(X @ X.T)
        elif kind == "euclidean":
            out.append(np.linalg.norm(X[:, None] - X[None], axis=-1))
        else:
            A = np.triu(rng.uniform(-1, 1, size=(n, n)))
            out.append(A + A.T)
    return tuple(out)


@SETTINGS
@given(pair=small_pairs(kinds=("gram", "euclidean")), seed=st.integers(0, 99))
def test_permutation_optimum_theorem(pair, seed):
    """Both PSD or both NSD: no coupling beats the best permutation."""
    C, D = pair
    cert = permutation_certificate(C, D)
    best = perm_optimum(C, D)
    if cert.holds:
        for c in coupling_costs(C, D, seed):
            assert c >= best - 1e-9 * max(1.0, best)


@SETTINGS
@given(pair=small_pairs(), seed=st.integers(0, 99))
def test_spectral_slack_bounds_every_coupling(pair, seed):
    """GW >= permutation optimum - slack for any symmetric pair."""
    C, D = pair
    cert = permutation_certificate(C, D)
    floor = perm_optimum(C, D) - cert.slack
    for c in coupling_costs(C, D, seed):
        assert c >= floor - 1e-9 * max(1.0, abs(floor))


# ---------------------------------------------------------------- rank one
def test_rank_one_matches_the_issue_formula_for_nonnegative_vectors():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=7), rng.uniform(size=7)
    n = 7
    formula = (a @ a / n) ** 2 + (b @ b / n) ** 2 - 2 * (np.sort(a) @ np.sort(b) / n) ** 2
    r = rank_one_bounds(np.outer(a, a), np.outer(b, b))
    assert r.closed_form == pytest.approx(formula, rel=1e-12)
    assert r.residual < 1e-12
    assert r.lower == pytest.approx(formula, rel=1e-9, abs=1e-12)
    assert r.upper == pytest.approx(formula, rel=1e-9, abs=1e-12)
    assert perm_optimum(np.outer(a, a), np.outer(b, b)) == pytest.approx(formula, rel=1e-9)


def test_rank_one_mixed_signs_can_need_the_antimonotone_coupling():
    a, b = np.array([3.0, -1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0, -3.0])
    C, D = np.outer(a, a), np.outer(b, b)
    n = 4
    naive = (a @ a / n) ** 2 + (b @ b / n) ** 2 - 2 * (np.sort(a) @ np.sort(b) / n) ** 2
    truth = perm_optimum(C, D)  # certified: both PSD
    r = rank_one_bounds(C, D)
    assert naive > truth + 1  # the monotone-only formula is wrong here
    assert r.closed_form == pytest.approx(truth, abs=1e-12)
    assert r.lower <= truth + 1e-12 <= r.upper + 2e-12


def test_rank_one_opposite_signs_are_handled():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=5), rng.normal(size=5)
    C, D = -np.outer(a, a), np.outer(b, b)
    r = rank_one_bounds(C, D)
    assert r.signs == (-1, 1)
    assert r.residual < 1e-12
    # here the optimum may be a mix of the two monotone couplings: its cost is the value
    assert cost(C, D, np.asarray(r.coupling)) == pytest.approx(r.closed_form, rel=1e-9)
    for c in coupling_costs(C, D, 0):
        assert c >= r.closed_form - 1e-9


@SETTINGS
@given(pair=small_pairs(kinds=("gram",)))
def test_rank_one_bounds_contain_exact_gw_on_psd_inputs(pair):
    C, D = pair
    exact = gwlite.gromov_wasserstein(C, D, method="exact")
    assert exact.certified
    r = rank_one_bounds(C, D)
    tol = 1e-9 * max(1.0, exact.value)
    assert r.lower <= exact.value + tol
    assert exact.value <= r.upper + tol
    assert r.upper <= r.residual_upper + tol


def test_rank_one_with_weights_and_unequal_sizes():
    rng = np.random.default_rng(7)
    X, Y = rng.uniform(size=(5, 1)), rng.uniform(size=(7, 1))
    C, D = X @ X.T + 0.01 * np.eye(5), Y @ Y.T
    p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(7))
    r = rank_one_bounds(C, D, p, q)
    T = np.asarray(r.coupling)
    np.testing.assert_allclose(T.sum(axis=1), p, atol=1e-12)
    np.testing.assert_allclose(T.sum(axis=0), q, atol=1e-12)
    assert r.upper == pytest.approx(cost(C, D, T), rel=1e-10)
    for c in coupling_costs(C, D, 1, p, q):
        assert r.lower <= c + 1e-12
    assert r.lower > 0  # near rank one: the bound is informative


def test_rank_one_lower_bound_kind():
    C, D = generate("coactivation", 8, 0)[0], generate("coactivation", 8, 1)[0]
    assert gwlite.lower_bound(C, D, lower="rank_one") == pytest.approx(rank_one_bounds(C, D).lower)
    batch = gwlite.lower_bound(np.stack([C, D]), np.stack([D, C]), lower="rank_one")
    assert batch.shape == (2,)
    assert "rank_one" in gwlite.LOWER_BOUNDS


def test_rank_one_bounds_hold_for_asymmetric_inputs():
    rng = np.random.default_rng(11)
    X = rng.uniform(size=(5, 1))
    C = X @ X.T + 0.05 * rng.uniform(size=(5, 5))  # near rank one, not symmetric
    D = np.outer(X[::-1, 0], X[::-1, 0])
    r = rank_one_bounds(C, D)
    best = min(
        float(np.mean((C - D[np.ix_(s, s)]) ** 2))
        for s in map(list, itertools.permutations(range(5)))
    )
    assert r.upper == pytest.approx(cost(C, D, np.asarray(r.coupling)), rel=1e-10)
    assert r.lower <= best
    assert r.lower <= r.upper <= r.residual_upper + 1e-12


def test_rank_one_lower_for_abs_loss_is_valid():
    """GW_1 >= GW_2 / max|C_ik - D_jl|: below the abs cost of every coupling."""
    rng = np.random.default_rng(12)
    X, Y = rng.uniform(size=(6, 1)), rng.uniform(1, 2, size=(6, 1))
    C, D = X @ X.T, Y @ Y.T
    low = gwlite.lower_bound(C, D, loss_fun="abs_loss", lower="rank_one")
    assert low > 0
    spread = max(C.max() - D.min(), D.max() - C.min())
    assert low == pytest.approx(rank_one_bounds(C, D).lower / spread)
    n = 6
    for s in map(list, itertools.permutations(range(n))):
        assert low <= np.mean(np.abs(C - D[np.ix_(s, s)])) + 1e-12
    T = np.full((n, n), 1 / n**2)
    L = np.abs(C[:, None, :, None] - D[None, :, None, :])
    assert low <= float(np.einsum("ijkl,ij,kl->", L, T, T))
