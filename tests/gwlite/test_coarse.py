"""The coarse start of ``method="proximal"`` (gwlite.solvers._coarse): farthest-point
samples cover their space, cells are nearest samples, the lifted plan is a coupling of
the problem's weights, and the solver's answer with it is feasible, priced exactly and
never worse than its other candidates; it is used only where documented."""

import numpy as np
import pytest
from backends import BACKENDS, convert
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import gw_cost_dense

import gwlite
from gwlite.coupling import gw_cost
from gwlite.problem import make_problem
from gwlite.solvers import _coarse


def _cloud(rng, n, dim=2):
    X = rng.random((n, dim))
    return np.linalg.norm(X[:, None] - X[None], axis=-1)


def _weights(rng, n):
    w = rng.random(n) + 0.05
    return w / w.sum()


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_farthest_points_cover_and_cells_are_nearest(n, s, seed):
    rng = np.random.default_rng(seed)
    C = _cloud(rng, n)
    s = min(s, n)
    index, cells = _coarse.farthest_points(C, s)
    index = np.asarray(index)
    assert len(set(index.tolist())) == s  # distinct points (they are distinct here)
    to_samples = C[:, index]
    # each point's cell is a nearest sample
    np.testing.assert_allclose(to_samples[np.arange(n), np.asarray(cells)], to_samples.min(axis=1))
    # Gonzalez: the covering radius is at most the smallest distance between samples
    if s >= 2:
        separation = min(C[a, b] for a in index for b in index if a != b)
        assert to_samples.min(axis=1).max() <= separation + 1e-12


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(32, 70), st.integers(32, 70), st.booleans(), st.integers(0, 2**31 - 1))
def test_lifted_plan_is_a_coupling_of_the_weights(n, m, uniform, seed):
    rng = np.random.default_rng(seed)
    p = None if uniform else _weights(rng, n)
    q = None if uniform else _weights(rng, m)
    problem = make_problem(_cloud(rng, n), _cloud(rng, m, dim=3), p, q)
    plan, note = _coarse.lifted_start(problem, None, seed=0)
    plan = np.asarray(plan)
    assert plan.min() >= 0
    np.testing.assert_allclose(plan.sum(axis=1), np.asarray(problem.p), atol=1e-12)
    np.testing.assert_allclose(plan.sum(axis=0), np.asarray(problem.q), atol=1e-12)
    assert note["points"] == max(min(n, m) // 4, 8)
    assert note["coarse_cost"] >= 0


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(40, 90), st.integers(0, 2**31 - 1))
def test_proximal_with_the_coarse_start_is_feasible_exact_and_never_worse(n, seed):
    rng = np.random.default_rng(seed)
    C1, C2 = _cloud(rng, n), _cloud(rng, n + 3)
    p = _weights(rng, n)
    res = gwlite.gromov_wasserstein(C1, C2, p, method="proximal", coarse=True)
    T = np.asarray(res.coupling)
    assert res.diagnostics["coarse"]["points"] == n // 4
    np.testing.assert_allclose(T.sum(axis=1), p, atol=1e-9)
    np.testing.assert_allclose(T.sum(axis=0), np.full(n + 3, 1 / (n + 3)), atol=1e-9)
    assert res.upper == pytest.approx(float(gw_cost(C1, C2, T)), rel=1e-9, abs=1e-12)
    product = float(gw_cost(C1, C2, np.outer(p, np.full(n + 3, 1 / (n + 3)))))
    assert res.upper <= product + 1e-12
    problem = make_problem(C1, C2, p)
    lifted, _ = _coarse.lifted_start(problem, None, seed=0)
    assert res.upper <= gw_cost_dense(C1, C2, np.asarray(lifted)) + 1e-12
    assert res.lower <= res.upper


def test_duplicated_points_leave_empty_cells_and_a_coupling():
    rng = np.random.default_rng(5)
    X = rng.random((10, 2))
    X = np.concatenate([X, X, X, X])  # every point four times
    C = np.linalg.norm(X[:, None] - X[None], axis=-1)
    problem = make_problem(C, _cloud(rng, 40))
    plan, note = _coarse.lifted_start(problem, None)
    assert note["points"] == 10
    np.testing.assert_allclose(np.asarray(plan).sum(axis=1), np.full(40, 1 / 40), atol=1e-12)
    np.testing.assert_allclose(np.asarray(plan).sum(axis=0), np.full(40, 1 / 40), atol=1e-12)
    index, cells = _coarse.farthest_points(C, 14)  # more samples than distinct points
    assert len(set(np.asarray(cells).tolist())) <= 10


def test_where_the_coarse_start_is_used():
    rng = np.random.default_rng(0)
    C1, C2 = _cloud(rng, 60), _cloud(rng, 50)
    notes = {
        "default, small": gwlite.gromov_wasserstein(C1, C2, method="proximal"),
        "off": gwlite.gromov_wasserstein(C1, C2, method="proximal", coarse=False),
        "not distances": gwlite.gromov_wasserstein(C1 - 0.5, C2, method="proximal", coarse=True),
        "abs": gwlite.gromov_wasserstein(
            np.round(C1 * 4), np.round(C2 * 4), method="proximal", loss_fun="abs_loss", coarse=True
        ),
        "on": gwlite.gromov_wasserstein(C1, C2, method="proximal", coarse=True),
    }
    coarse = {k: r.diagnostics["coarse"] for k, r in notes.items()}
    assert coarse["default, small"] == "not used: small problem"
    assert coarse["off"] == "off"
    assert coarse["not distances"] == "not used: the matrices are not distances"
    assert coarse["abs"] == "not used: abs_loss"
    assert coarse["on"]["points"] == 12
    assert notes["on"].diagnostics["factored_iter"] == 0  # no loop ran
    assert notes["on"].n_iter == 0
    big = _cloud(rng, _coarse.COARSE_FROM)
    default = gwlite.gromov_wasserstein(big, big[::-1, ::-1], method="proximal", time_limit=5.0)
    assert isinstance(default.diagnostics["coarse"], dict)


def test_never_worse_than_G0_or_the_sorted_coupling_with_the_coarse_start():
    from gwlite.bounds import sorted_sparse_coupling
    from gwlite.coupling import to_dense

    rng = np.random.default_rng(9)
    C1, C2 = _cloud(rng, 64), _cloud(rng, 64)
    good = gwlite.gromov_wasserstein(C1, C2, method="cg")
    G0 = np.asarray(good.coupling)
    res = gwlite.gromov_wasserstein(C1, C2, method="proximal", coarse=True, G0=G0)
    assert res.diagnostics["starts"][:2] == ["coarse", "G0"]
    assert res.upper <= float(gw_cost(C1, C2, G0)) + 1e-12
    sorted_plan = to_dense(sorted_sparse_coupling(make_problem(C1, C2)))
    assert res.upper <= float(gw_cost(C1, C2, np.asarray(sorted_plan))) + 1e-12


def test_sample_size_follows_the_budget():
    problem = make_problem(np.zeros((4000, 4000)), np.zeros((3000, 3000)))
    assert _coarse.sample_size(problem, None, None) == _coarse.COARSE_POINTS
    small = make_problem(np.zeros((100, 100)), np.zeros((300, 300)))
    assert _coarse.sample_size(small, None, None) == 25
    sizes = [_coarse.sample_size(problem, budget, 1e10) for budget in (1e-6, 0.1, 1.0, 1e4)]
    assert sizes == sorted(sizes) and sizes[0] == 8 and sizes[-1] == _coarse.COARSE_POINTS


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_equals_numpy(backend):
    rng = np.random.default_rng(3)
    C1, C2 = _cloud(rng, 48), _cloud(rng, 40)
    a = gwlite.gromov_wasserstein(C1, C2, method="proximal", coarse=True)
    b = gwlite.gromov_wasserstein(
        convert(C1, backend), convert(C2, backend), method="proximal", coarse=True, dtype="float64"
    )
    assert float(b.upper) == pytest.approx(float(a.upper), rel=1e-7)
    assert b.diagnostics["coarse"]["points"] == a.diagnostics["coarse"]["points"]
