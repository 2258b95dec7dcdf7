"""Property-based tests of the exact solver's mathematical claims (hypothesis)."""

from __future__ import annotations

import itertools

import numpy as np
import ot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gwlite

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOSSES = {"square_loss": 2, "abs_loss": 1}


@st.composite
def symmetric_pairs(draw, kind=None):
    """Two symmetric matrices of one size, of a random (or given) kind."""
    n = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = kind or draw(st.sampled_from(["uniform", "gram", "euclidean", "graph"]))
    rng = np.random.default_rng(seed)
    return tuple(_matrix(rng, n, kind) for _ in range(2))


def _matrix(rng, n, kind):
    if kind == "gram":
        X = rng.normal(size=(n, 2))
        return X @ X.T
    if kind == "euclidean":
        X = rng.normal(size=(n, 2))
        return np.linalg.norm(X[:, None] - X[None], axis=-1)
    A = np.triu(rng.uniform(size=(n, n)), 1)
    if kind == "graph":
        A = (A > 0.5).astype(float)
    return A + A.T


def brute_force(C, D, r):
    return min(
        float(np.mean(np.abs(C - D[np.ix_(s, s)]) ** r))
        for s in map(list, itertools.permutations(range(len(C))))
    )


def feasible_costs(C, D, r, seed):
    """GW costs of feasible couplings built without gwlite: each one is >= GW."""
    n = len(C)
    p = np.full(n, 1 / n)
    rng = np.random.default_rng(seed)
    costs = []
    for _ in range(5):
        M = rng.uniform(size=(n, n))
        T = ot.sinkhorn(p, p, M, 0.5, numItermax=5000, stopThr=1e-13)
        T = T / T.sum(axis=1, keepdims=True) / n  # rows exact; columns within 1e-13
        L = np.abs(C[:, None, :, None] - D[None, :, None, :]) ** r
        costs.append(float(np.einsum("ijkl,ij,kl->", L, T, T)))
    if r == 2:
        T = ot.gromov.gromov_wasserstein(C, D, p, p, G0=np.outer(p, p))
        L = (C[:, None, :, None] - D[None, :, None, :]) ** 2
        costs.append(float(np.einsum("ijkl,ij,kl->", L, T, T)))
    return costs


@SETTINGS
@given(pair=symmetric_pairs(), loss=st.sampled_from(sorted(LOSSES)), seed=st.integers(0, 99))
def test_lower_le_gw_le_upper(pair, loss, seed):
    C, D = pair
    r = LOSSES[loss]
    res = gwlite.gromov_wasserstein(C, D, method="exact", loss_fun=loss)
    perm_opt = brute_force(C, D, r)
    assert abs(res.value - perm_opt) <= 1e-12 * max(1.0, perm_opt)
    # GW <= the cost of any coupling: a valid lower bound stays below all of them
    for cost in feasible_costs(C, D, r, seed) + [perm_opt]:
        assert res.lower <= cost + 1e-9
    if res.certified:
        # certified means the best permutation is the GW optimum: nothing beats it
        for cost in feasible_costs(C, D, r, seed + 1):
            assert cost >= res.value - 1e-9


@SETTINGS
@given(pair=symmetric_pairs(), loss=st.sampled_from(sorted(LOSSES)), seed=st.integers(0, 2**31))
def test_exact_value_is_invariant_to_relabelling(pair, loss, seed):
    C, D = pair
    rng = np.random.default_rng(seed)
    a, b = rng.permutation(len(C)), rng.permutation(len(D))
    res = gwlite.gromov_wasserstein(C, D, method="exact", loss_fun=loss)
    moved = gwlite.gromov_wasserstein(
        C[np.ix_(a, a)], D[np.ix_(b, b)], method="exact", loss_fun=loss
    )
    assert abs(res.value - moved.value) <= 1e-12 * max(1.0, res.value)
    assert res.certified == moved.certified


@SETTINGS
@given(pair=symmetric_pairs(), loss=st.sampled_from(sorted(LOSSES)), seed=st.integers(0, 2**31))
def test_exact_is_zero_on_isomorphic_inputs(pair, loss, seed):
    C, _ = pair
    perm = np.random.default_rng(seed).permutation(len(C))
    res = gwlite.gromov_wasserstein(C, C[np.ix_(perm, perm)], method="exact", loss_fun=loss)
    assert res.value == 0.0 and res.upper == 0.0
    assert res.lower <= 1e-12
