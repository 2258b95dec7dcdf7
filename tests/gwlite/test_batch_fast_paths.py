"""The dataset fast paths of the batched engine (issue 21): each is tested against the
one-by-one computation it replaces, and every bound as a bound.

* the batched TLB (sorted rows, one batched product less a rounding margin, or
  differences) is below every coupling's cost, below TLB's exact cost matrix entry by
  entry, and equal to ``lower_bound(..., lower="tlb")`` up to round-off;
* the batched mean-row bound equals ``lower_bound(..., lower="mean_row")``;
* the first conditional-gradient vertex from the product coupling (by sorting) is an
  optimal assignment of the gradient;
* the batched exact pricing equals ``gw_cost`` (and the fused objective) on any plan.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import best_permutation, gw_cost_dense, random_coupling

import gwlite
from gwlite.batch import _row_costs, tlb_lowers
from gwlite.coupling import gw_cost
from gwlite.problem import make_problem
from gwlite.solvers import _polish, _stack, batched

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _matrix(rng, n, kind):
    if kind == "distance":
        X = rng.standard_normal((n, 3))
        return np.linalg.norm(X[:, None] - X[None], axis=-1)
    if kind == "integer":  # ties everywhere
        A = rng.integers(0, 3, (n, n)).astype(float)
        return A + A.T
    A = rng.standard_normal((n, n))  # negative entries: the differences path
    return A + A.T


@SETTINGS
@given(
    st.integers(2, 6), st.integers(0, 10_000), st.sampled_from(["distance", "integer", "signed"])
)
def test_batched_tlb_is_below_every_coupling_and_equals_tlb(n, seed, kind):
    rng = np.random.default_rng(seed)
    pairs = [(_matrix(rng, n, kind), _matrix(rng, n, kind)) for _ in range(3)]
    problems = [make_problem(a, b) for a, b in pairs]
    values = tlb_lowers(problems)
    w = np.full(n, 1.0 / n)
    for (C1, C2), value in zip(pairs, values):
        scale = max(np.abs(C1).max(), np.abs(C2).max(), 1e-300) ** 2
        assert value <= best_permutation(C1, C2)[0] + 1e-12 * scale
        for T in [random_coupling(rng, w, w) for _ in range(3)]:
            assert value <= gw_cost_dense(C1, C2, T) + 1e-12 * scale
        exact = float(gwlite.lower_bound(C1, C2, lower="tlb"))
        assert value == pytest.approx(exact, rel=1e-9, abs=1e-12 * scale)


@SETTINGS
@given(
    st.integers(2, 9), st.integers(0, 10_000), st.sampled_from(["distance", "integer", "signed"])
)
def test_tlb_costs_are_below_the_exact_costs(n, seed, kind):
    """Entry by entry: a linear program on smaller costs has a smaller value, so the
    margin makes the batched TLB a bound on TLB's own."""
    rng = np.random.default_rng(seed)
    C1, C2 = _matrix(rng, n, kind), _matrix(rng, n, kind)
    (M,) = _row_costs([make_problem(C1, C2)])
    S1, S2 = np.sort(C1, axis=1), np.sort(C2, axis=1)
    # exact in rational arithmetic would be ideal; differences cancel nothing
    exact = ((S1[:, None, :] - S2[None, :, :]) ** 2).mean(axis=-1)
    slack = 4 * np.finfo(float).eps * exact
    assert np.all(M <= exact + slack)
    assert np.allclose(M, exact, rtol=1e-9, atol=1e-12 * max(np.abs(C1).max(), 1) ** 2)


def test_batched_tlb_does_not_depend_on_its_batch():
    rng = np.random.default_rng(3)
    spaces = [_matrix(rng, 7, "distance") for _ in range(5)]
    problems = [make_problem(a, b) for a in spaces for b in spaces]
    together = tlb_lowers(problems)
    alone = [tlb_lowers([pr])[0] for pr in problems]
    np.testing.assert_array_equal(together, alone)


def test_unequal_sizes_and_weights_take_the_one_by_one_tlb():
    rng = np.random.default_rng(4)
    C1, C2 = _matrix(rng, 5, "distance"), _matrix(rng, 7, "distance")
    p = rng.random(5) + 0.1
    problems = [make_problem(C1, C2), make_problem(C1, C1, p / p.sum(), None)]
    values = tlb_lowers(problems)
    assert values[0] == gwlite.lower_bound(C1, C2, lower="tlb")
    assert values[1] == gwlite.lower_bound(C1, C1, p / p.sum(), None, lower="tlb")
    skipped = tlb_lowers(problems, wanted=[False, True])
    assert np.isnan(skipped[0]) and skipped[1] == values[1]


@SETTINGS
@given(st.integers(2, 9), st.integers(0, 10_000), st.sampled_from(["distance", "integer"]))
def test_batched_mean_row_equals_the_bound(n, seed, kind):
    rng = np.random.default_rng(seed)
    problems = [make_problem(_matrix(rng, n, kind), _matrix(rng, n, kind)) for _ in range(3)]
    values = batched._mean_row_uniform(problems)
    for pr, value in zip(problems, values):
        exact = float(gwlite.lower_bound(pr.C1, pr.C2, lower="mean_row"))
        assert value == pytest.approx(exact, rel=1e-12, abs=1e-15)


@SETTINGS
@given(st.integers(2, 9), st.integers(0, 10_000), st.sampled_from(["distance", "integer"]))
def test_first_vertex_by_sorting_is_an_optimal_assignment(n, seed, kind):
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    problem = make_problem(_matrix(rng, n, kind), _matrix(rng, n, kind))
    N = batched.padded_size(n)
    st_ = _stack.make_stack([problem], None, [0], N, N, 1.0, np.float64)
    R = np.zeros((1, 1, N, N))
    R[0, 0, :n, :n] = 1.0 / (n * n)
    (perm,) = _polish._product_vertices(st_, R).values()
    grad = st_.gradient(st_.apply(R))[0, 0, :n, :n]
    rows, cols = linear_sum_assignment(grad)
    best = grad[rows, cols].sum()
    assert grad[np.arange(n), perm].sum() <= best + 1e-12 * max(1.0, abs(best))
    assert sorted(perm) == list(range(n))


def test_product_vertices_skip_other_plans_and_fused_problems():
    rng = np.random.default_rng(1)
    problem = make_problem(_matrix(rng, 5, "distance"), _matrix(rng, 5, "distance"))
    N = batched.padded_size(5)
    R = np.zeros((1, 2, N, N))
    R[0, 0, :5, :5] = 1.0 / 25
    R[0, 1, np.arange(5), np.arange(5)] = 1.0 / 5
    plain = _stack.make_stack([problem], None, [0], N, N, 1.0, np.float64)
    assert list(_polish._product_vertices(plain, R)) == [(0, 0)]
    fused = _stack.make_stack([problem], [np.ones((5, 5))], [0], N, N, 0.5, np.float64)
    assert _polish._product_vertices(fused, R) == {}


@SETTINGS
@given(st.integers(2, 7), st.integers(2, 7), st.integers(0, 10_000), st.sampled_from([1.0, 0.3]))
def test_batched_exact_cost_equals_gw_cost(n, m, seed, alpha):
    rng = np.random.default_rng(seed)
    C1, C2 = _matrix(rng, n, "distance"), _matrix(rng, m, "distance")
    p = rng.random(n) + 0.1
    p /= p.sum()
    q = np.full(m, 1.0 / m)
    problem = make_problem(C1, C2, p, q)
    M = rng.random((n, m))
    N, K = batched.padded_size(n), batched.padded_size(m)
    st_ = _stack.make_stack([problem], [M] if alpha < 1 else None, [0], N, K, alpha, np.float64)
    plans = [random_coupling(rng, p, q) for _ in range(3)]
    stack = np.zeros((1, 3, N, K))
    for s, T in enumerate(plans):
        stack[0, s, :n, :m] = T
    costs = _stack.exact_cost(st_, stack)[0]
    for T, cost in zip(plans, costs):
        expected = alpha * float(gw_cost(C1, C2, T)) + (1 - alpha) * float(np.sum(M * T))
        assert cost == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_pairwise_auto_plans_are_no_worse_than_pot_cg():
    """The dataset target's plan side: ``pairwise(method="auto")`` starts where POT's
    conditional gradient starts (the product coupling) and keeps the sorted coupling as a
    candidate, so on random trees no pair's upper bound is above POT CG's value."""
    import ot

    rng = np.random.default_rng(11)
    spaces = []
    for _ in range(8):
        X = np.cumsum(rng.standard_normal((20, 3)), axis=0)  # a random walk in 3-D
        spaces.append(np.linalg.norm(X[:, None] - X[None], axis=-1))
    res = gwlite.pairwise(spaces, method="auto", engine=1, progress=False)
    w = np.full(20, 1 / 20)
    for i in range(8):
        for j in range(i + 1, 8):
            cg = float(ot.gromov.gromov_wasserstein2(spaces[i], spaces[j], w, w))
            assert res.upper[i, j] <= cg * (1 + 1e-9) + 1e-12
            assert res.lower[i, j] <= res.upper[i, j]
            tlb = float(gwlite.lower_bound(spaces[i], spaces[j], lower="tlb"))
            assert res.lower[i, j] >= tlb * (1 - 1e-9) - 1e-12  # TLB is the lower side
