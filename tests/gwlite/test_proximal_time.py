"""``method="proximal"`` under a time limit: every piece of the call is priced before it
runs (the time model), and the answer is never worse than a start whatever the limit."""

import multiprocessing
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import random_coupling

import gwlite
from gwlite.bounds import sorted_sparse_coupling
from gwlite.coupling import gw_cost, marginal_error
from gwlite.problem import make_problem
from gwlite.solvers import _prox_time, proximal


def _cloud(n, seed, dim=3):
    X = np.random.default_rng(seed).random((n, dim))
    return np.linalg.norm(X[:, None] - X[None], axis=-1)


def _slow_model(seconds_per_flop=1.0):
    """A machine so slow that nothing optional fits any limit."""
    rate = 1.0 / seconds_per_flop
    return _prox_time.TimeModel(1e9, 1e9, 1e9, rate, rate)


def _settings(**changes):
    base = {"step": None, "epsilon": None, "max_iter": 100, "tol": 1e-4, "inner_iter": 20}
    base |= {"rank": None, "dtype": None} | changes
    return proximal._settings(make_problem(np.eye(2), np.eye(2)), **base)


# ------------------------------------------------------------------ the time model
def test_cpu_share_is_a_share():
    share = _prox_time.cpu_share()
    assert 0 < share <= 1


def test_processes_started_now_count_as_load_and_get_one_blas_thread():
    """Two processes started a second ago barely move the 1-minute load average; the
    runnable count sees them, so the solver's thread rule drops to one thread."""
    from threadpoolctl import threadpool_info

    from gwlite.solvers._common import blas_threads, machine_load, usable_cores

    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_spin, args=(30.0,)) for _ in range(usable_cores())]
    for w in workers:
        w.start()
    try:
        time.sleep(1.5)  # spawned and spinning
        assert machine_load() >= usable_cores() + 1
        with blas_threads(None):
            threads = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        assert threads == {1}
        assert _prox_time.cpu_share() <= usable_cores() / (usable_cores() + 1) + 1e-9
    finally:
        for w in workers:
            w.terminate()
            w.join()


def test_step_clock_predicts_the_slowest_recent_step():
    clock = _prox_time.StepClock(guess=2.0)
    assert clock.predict == 2.0  # no step yet: the model's guess
    for seconds in (0.1, 0.5, 0.2, 0.3):
        clock.record(seconds)
    assert clock.predict == 0.5 and clock.last == 0.3
    clock.record(0.1)
    assert clock.predict == 0.3  # only the last three count


def test_model_estimates_grow_with_the_work():
    model = _prox_time.measure(200, 200, 1, True, 1, 20, np, np.float64, "cpu", 1.0)
    assert model.rate > 0 and model.step_s > model.apply_s > 0
    assert model.svd_s(2000, 2000, 128) > model.svd_s(1000, 1000, 128)
    assert model.emd_s(2000, 2000) > 4 * model.emd_s(1000, 1000)
    assert model.sparse_price_s(2000) == pytest.approx(4 * model.sparse_price_s(1000))


def test_low_rank_set_up_is_skipped_when_its_estimate_does_not_fit():
    C1, C2 = _cloud(520, 0), _cloud(500, 1)
    sub = make_problem(C1, C2)
    cfg = _settings(dtype="float32")
    deadline = time.perf_counter() + 10.0
    op, note = proximal._low_rank(sub, cfg, 0, True, deadline, _slow_model())
    assert op is None and note.startswith("skipped")
    op, note = proximal._low_rank(sub, cfg, 0, True, None, None)  # no limit: always tried
    assert op is not None and note == "used"


def test_sorted_candidate_is_skipped_only_when_its_pricing_does_not_fit():
    C1, C2 = _cloud(60, 2), _cloud(50, 3)
    sub = make_problem(C1, C2)
    deadline = time.perf_counter() + 10.0
    candidate, note = proximal._sorted_candidate(np, sub, ["product"], deadline, _slow_model())
    assert candidate is None and note.startswith("skipped")
    candidate, note = proximal._sorted_candidate(np, sub, ["product"], None, None)
    expected = float(gw_cost(C1, C2, sorted_sparse_coupling(sub)))
    assert note == "priced" and candidate[1] == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ never worse than a start
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 12),
    m=st.integers(3, 12),
    seed=st.integers(0, 2**16),
    time_limit=st.sampled_from([None, 1e-4, 1e-2, 0.2]),
    n_starts=st.integers(1, 3),
)
def test_never_worse_than_a_start_whatever_the_limit(n, m, seed, time_limit, n_starts):
    rng = np.random.default_rng(seed)
    C1, C2 = _cloud(n, seed), rng.random((m, m))
    C2 = C2 + C2.T
    p, q = rng.random(n) + 0.1, rng.random(m) + 0.1
    p, q = p / p.sum(), q / q.sum()
    G0 = random_coupling(rng, p, q)
    res = gwlite.gromov_wasserstein(
        C1, C2, p, q, method="proximal", G0=G0, n_starts=n_starts, time_limit=time_limit
    )
    T = np.asarray(res.coupling)
    assert marginal_error(T, p, q) <= 1e-8 and T.min() >= -1e-15
    assert res.upper == pytest.approx(float(gw_cost(C1, C2, T)), rel=1e-9, abs=1e-12)
    slack = 1e-9 * max(1.0, abs(res.upper))
    assert res.upper <= float(gw_cost(C1, C2, G0)) + slack  # G0 is always a candidate
    assert res.upper <= float(gw_cost(C1, C2, np.outer(p, q))) + slack
    note = res.diagnostics["sorted_candidate"]
    if note in ("a start", "priced"):  # skipped only when its pricing cannot fit
        sorted_cost = float(gw_cost(C1, C2, sorted_sparse_coupling(make_problem(C1, C2, p, q))))
        assert res.upper <= sorted_cost + slack


# ------------------------------------------------------------------ under load
def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_time_limit_holds_with_two_busy_processes():
    import ot  # noqa: F401  (imported before the clock, as gromov_wasserstein does)
    import scipy.optimize  # noqa: F401

    C1, C2 = _cloud(1000, 4, dim=2), _cloud(1000, 5, dim=2)
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_spin, args=(60.0,)) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        limit = 1.5
        start = time.perf_counter()
        res = gwlite.gromov_wasserstein(C1, C2, method="proximal", time_limit=limit)
        elapsed = time.perf_counter() - start
    finally:
        for w in workers:
            w.terminate()
            w.join()
    # the 10% target, plus scheduling noise of a shared CI machine
    assert elapsed <= 1.1 * limit + 0.4
    assert res.diagnostics["stop_reason"] in ("time_limit", "tol", "zero cost")
    assert marginal_error(np.asarray(res.coupling), np.full(1000, 1e-3), np.full(1000, 1e-3)) < 1e-8


# ------------------------------------------------------------------ auto
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), m=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_auto_product_cost_closed_form_equals_the_plan_cost(n, m, seed):
    from gwlite.solvers import auto

    rng = np.random.default_rng(seed)
    C1, C2 = rng.normal(size=(n, n)), rng.normal(size=(m, m))  # any matrices
    p, q = rng.random(n) + 0.01, rng.random(m) + 0.01
    p, q = p / p.sum(), q / q.sum()
    value = auto._product_cost(make_problem(C1, C2, p, q))
    assert value == pytest.approx(float(gw_cost(C1, C2, np.outer(p, q))), rel=1e-9, abs=1e-12)


def test_auto_offers_the_product_coupling_when_the_sorted_one_cannot_be_priced():
    from gwlite.solvers import auto

    C1, C2 = _cloud(40, 6), _cloud(30, 7)
    problem = make_problem(C1, C2)
    best = auto._Best(problem)
    ctx = auto._Context(problem, best, time.perf_counter() - 1.0, 1e-6, None, 0, None)
    note = auto._stage_sorted(ctx)  # no time left: the sorted coupling is not priced
    assert "not priced" in note["sorted_coupling"] and best.upper_by == "product"
    assert best.lower == pytest.approx(float(gwlite.lower_bound(C1, C2, lower="mean_row")))
    assert best.upper == pytest.approx(
        float(gw_cost(C1, C2, np.outer(best.coupling.sum(1), best.coupling.sum(0))))
    )
