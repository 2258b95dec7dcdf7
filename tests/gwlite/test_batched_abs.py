"""The batched core with ``loss_fun="abs_loss"`` (level sets, as the single ``proximal``).

The stack's operator equals the single solver's level-set operator, its objective the
brute-force absolute-loss cost; zero-weight padding changes nothing (feasible plans
priced exactly with bounds below every coupling tried, batched equals one by one and
every backend equals NumPy: tests/gwlite/test_batched.py, for both losses);
``auto`` and ``proximal`` treat matrices with too many distinct values as documented."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import gw_cost_dense, random_coupling
from strategies import problems

import gwlite
from gwlite.errors import GWInputError
from gwlite.problem import make_problem
from gwlite.solvers import _operators, _stack
from gwlite.solvers.batched import padded_size, solve_batch

FAST = {"max_iter": 40, "n_starts": 3, "polish": 5}


def _levels(C, step=3):
    """``C`` on a coarse grid: few distinct values (what ``abs_loss`` takes)."""
    return np.round(np.asarray(C, dtype=np.float64) * step) / step


def _graphs(seed=0, count=6, nodes=(5, 9)):
    """Shortest-path matrices of random connected graphs (integer distances)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        n = int(rng.integers(*nodes))
        g = nx.gnp_random_graph(n, 0.4, seed=int(rng.integers(2**31)))
        if nx.is_connected(g):
            out.append(np.asarray(nx.floyd_warshall_numpy(g), dtype=np.float64))
    return out


def _plan(res):
    return np.asarray(res.coupling, dtype=np.float64)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_n=6), st.integers(0, 2**31 - 1))
def test_stack_operator_and_objective_equal_the_single_solvers(instance, seed):
    """The padded stack's X(P) equals the level-set operator of the single solver on the
    real nodes, and its objective the brute-force absolute-loss cost of a coupling."""
    C1, C2, p, q = instance
    C1, C2 = _levels(C1), _levels(C2)
    problem = make_problem(C1, C2, p, q, loss_fun="abs_loss")
    n, m = problem.n, problem.m
    N, K = padded_size(n) + 2, padded_size(m)
    st_ = _stack.make_stack([problem], None, [0], N, K, 1.0, np.float64)
    assert not st_.square
    rng = np.random.default_rng(seed)
    T = random_coupling(rng, np.asarray(problem.p), np.asarray(problem.q))
    P = np.zeros((1, 1, N, K))
    P[0, 0, :n, :m] = T
    X = st_.apply(P)[0, 0]
    reference = _operators.exact(problem).apply(np, T)
    np.testing.assert_allclose(X[:n, :m], reference, atol=1e-12)
    value = float(st_.objective(P)[0, 0])
    assert value == pytest.approx(gw_cost_dense(C1, C2, T, "abs_loss"), rel=1e-9, abs=1e-12)


def test_mixed_losses_in_one_batch_equal_separate_batches():
    graphs = _graphs(seed=1, count=4)
    square = [make_problem(a, b) for a in graphs for b in graphs[:1]]
    absolute = [make_problem(a, b, loss_fun="abs_loss") for a in graphs for b in graphs[:1]]
    mixed = solve_batch(square + absolute, **FAST)
    alone = solve_batch(square, **FAST) + solve_batch(absolute, **FAST)
    assert [r.upper for r in mixed] == pytest.approx([r.upper for r in alone], rel=1e-12)
    assert [r.loss_fun for r in mixed] == ["square_loss"] * 4 + ["abs_loss"] * 4


def test_zero_weight_nodes_change_no_cost_or_bound():
    rng = np.random.default_rng(6)
    C1, C2 = _graphs(seed=2, count=2, nodes=(7, 8))
    n = len(C1)
    p = rng.random(n) + 0.1
    p /= p.sum()
    extra = np.full((n + 2, n + 2), 2.0)
    np.fill_diagonal(extra, 0.0)
    extra[:n, :n] = C1
    for scheme in ("proximal", "cg"):
        options = {"n_starts": 2, "max_iter": 60, "scheme": scheme}
        (base,) = solve_batch([make_problem(C1, C2, p, loss_fun="abs_loss")], **options)
        weights = np.concatenate([p, [0.0, 0.0]])
        (padded,) = solve_batch([make_problem(extra, C2, weights, loss_fun="abs_loss")], **options)
        assert padded.upper == pytest.approx(base.upper, rel=1e-8, abs=1e-12)
        assert padded.lower == pytest.approx(base.lower, rel=1e-8, abs=1e-12)
        assert np.all(_plan(padded)[n:] == 0)


def test_never_worse_than_the_exact_optimum_bound_and_often_optimal():
    """Equal-size graphs: the lower bound is below the exact optimum (brute force over
    the vertices by method="exact"), the plan never below it."""
    graphs = [g for g in _graphs(seed=5, count=12, nodes=(6, 7)) if len(g) == 6][:5]
    pairs = [(a, b) for i, a in enumerate(graphs) for b in graphs[i + 1 :]]
    results = gwlite.gromov_wasserstein_batch(
        [a for a, _ in pairs], [b for _, b in pairs], loss_fun="abs_loss", method="proximal"
    )
    for (a, b), res in zip(pairs, results):
        exact = gwlite.gromov_wasserstein(a, b, loss_fun="abs_loss", method="exact")
        assert res.lower <= exact.lower + 1e-9
        assert res.upper >= exact.upper - 1e-9


def test_many_distinct_values_refused_by_proximal_and_skipped_by_auto():
    rng = np.random.default_rng(0)
    graphs = _graphs(seed=3, count=2)
    dense = rng.random((12, 12))  # 66 distinct distances: more than 64 levels
    dense = dense + dense.T
    np.fill_diagonal(dense, 0.0)
    C1s, C2s = [graphs[0], dense], [graphs[1], graphs[1]]
    with pytest.raises(GWInputError, match="problem 1: .*at most 64 distinct values"):
        gwlite.gromov_wasserstein_batch(C1s, C2s, loss_fun="abs_loss", method="proximal")
    few, many = gwlite.gromov_wasserstein_batch(C1s, C2s, loss_fun="abs_loss")
    assert "proximal_skipped" not in few.diagnostics
    assert few.diagnostics["upper_by"] == "proximal"
    assert many.diagnostics["proximal_skipped"].startswith("abs_loss with many")
    assert many.diagnostics["upper_by"] == "sorted"
    alone = gwlite.gromov_wasserstein_batch(C1s[:1], C2s[:1], loss_fun="abs_loss")[0]
    assert few.upper == alone.upper  # the other problem changes nothing
    for res, (a, b) in zip((few, many), zip(C1s, C2s)):
        assert res.lower <= res.upper
        assert res.upper == pytest.approx(gw_cost_dense(a, b, _plan(res), "abs_loss"), rel=1e-9)


@pytest.mark.parametrize("method", ["auto", "proximal"])
def test_pairwise_abs_loss_goes_through_the_batch(method, monkeypatch):
    from gwlite.pairs import tasks

    graphs = _graphs(seed=4, count=5)
    called = []
    original = tasks._through_batch
    monkeypatch.setattr(
        tasks, "_through_batch", lambda *a, **k: called.append(1) or original(*a, **k)
    )
    a = gwlite.pairwise(graphs, method=method, loss_fun="abs_loss", chunk=2, progress=False)
    b = gwlite.pairwise(graphs, method=method, loss_fun="abs_loss", chunk=5, progress=False)
    assert called
    np.testing.assert_array_equal(a.upper, b.upper)
    direct = gwlite.gromov_wasserstein_batch(
        graphs[:1], graphs[3:4], method=method, loss_fun="abs_loss"
    )[0]
    assert a.upper[0, 3] == direct.upper
    assert np.all(a.lower <= a.upper)
