"""method="rlt": the dual-ascent bound as a bound, whatever the multipliers, and bad input.

Every ``lower`` is checked against couplings built here (all permutations, random
couplings, POT's conditional gradient from several starts, ``exact``'s certified
optimum), never against the solver's own numbers; the bound of one iteration is checked
for arbitrary multipliers (it must hold whatever the ascent did before).
"""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import best_permutation, gw_cost_dense, permutation_matrix, random_coupling
from strategies import problems

import gwlite
from gwlite.families import generate
from gwlite.solvers import _rlt_bound, rlt
from gwlite.solvers._sdp_model import lifted_cost

LOSSES = ("square_loss", "abs_loss")
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def uniform(n):
    return np.full(n, 1.0 / n)


def weights_or_uniform(w, n):
    return uniform(n) if w is None else w


def coupling_costs(C1, C2, p, q, loss, seed=0, k=12):
    """Costs of couplings built without the solver: random ones, p q^T, every
    permutation (uniform weights, n == m <= 6) and, for the square loss, POT's
    conditional gradient from random starts (multi-start local solver). Each is >= GW."""
    rng = np.random.default_rng(seed)
    plans = [random_coupling(rng, p, q) for _ in range(k)] + [np.outer(p, q)]
    n, m = len(p), len(q)
    if n == m <= 6 and np.allclose(p, 1 / n) and np.allclose(q, 1 / m):
        plans += [permutation_matrix(np.array(s)) for s in itertools.permutations(range(n))]
    if loss == "square_loss":
        import ot

        plans += [ot.gromov.gromov_wasserstein(C1, C2, p, q, G0=plan) for plan in plans[:4]]
    return [gw_cost_dense(C1, C2, T, loss) for T in plans]


def pair(family, n, seed):
    return generate(family, n, 2 * seed)[0], generate(family, n, 2 * seed + 1)[0]


# ---------------------------------------------------------------- lower is a bound
@SETTINGS
@given(problems(max_n=5), st.sampled_from(LOSSES), st.integers(1, 30))
def test_every_iteration_is_below_every_coupling(inst, loss, max_iter):
    C1, C2, p, q = inst
    res = gwlite.gromov_wasserstein(C1, C2, p, q, method="rlt", loss_fun=loss, max_iter=max_iter)
    p, q = weights_or_uniform(p, len(C1)), weights_or_uniform(q, len(C2))
    cheapest = min(coupling_costs(C1, C2, p, q, loss))
    scale = max(np.abs(C1).max(), np.abs(C2).max()) ** (2 if loss == "square_loss" else 1)
    # every iterate, not only the reported best, is a proven bound
    for value in res.diagnostics["history"] + [res.lower]:
        assert value <= cheapest + 1e-12 * scale
    assert res.lower <= res.upper
    T = np.asarray(res.coupling)
    assert res.upper == pytest.approx(gw_cost_dense(C1, C2, T, loss), rel=1e-9, abs=1e-12)
    assert res.diagnostics["iterations"] <= max_iter


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(
    "family, n, seed", [("erdos_renyi", 6, 0), ("barabasi_albert", 6, 1), ("tree", 6, 3)]
)
def test_below_the_permutation_optimum_and_above_tlb(family, n, seed, loss):
    C1, C2 = pair(family, n, seed)
    res = gwlite.gromov_wasserstein(C1, C2, method="rlt", loss_fun=loss)
    best, _ = best_permutation(C1, C2, loss)
    assert res.lower <= best + 1e-12
    assert res.lower <= min(coupling_costs(C1, C2, uniform(n), uniform(n), loss)) + 1e-12
    tlb = float(gwlite.lower_bound(C1, C2, loss_fun=loss, lower="tlb"))
    # the first iteration is TLB (up to the proof's margins); later ones never lose it
    assert res.diagnostics["history"][0] >= tlb - 1e-12
    assert res.diagnostics["rlt_bound"] >= tlb - 1e-12


@pytest.mark.parametrize("family", ["tree_metric", "euclidean", "gram"])
def test_below_the_certified_optimum_of_exact(family):
    # PSD/PSD and CND/CND pairs: exact certifies GW itself
    for seed in range(3):
        C1, C2 = pair(family, 7, seed)
        ref = gwlite.gromov_wasserstein(C1, C2, method="exact")
        if not ref.certified:
            continue
        res = gwlite.gromov_wasserstein(C1, C2, method="rlt", lower="mean_row")
        assert res.diagnostics["rlt_bound"] <= ref.upper + 1e-12 * np.abs(C1).max() ** 2


def _random_state(rng, L, spread):
    """Arbitrary multipliers: Q need not be L + antisymmetric - h 1^T at all."""
    N = L.shape[0]
    Q = L + spread * rng.normal(size=(N, N))
    return _rlt_bound.AscentState(L=L, Q=Q, h=spread * rng.normal(size=N))


@SETTINGS
@given(
    problems(max_n=4, symmetric_only=True),
    st.integers(0, 2**31 - 1),
    st.floats(1e-3, 10.0),
    st.sampled_from(LOSSES),
)
def test_one_iteration_is_a_bound_for_arbitrary_multipliers(inst, seed, spread, loss):
    C1, C2, p, q = inst
    p, q = weights_or_uniform(p, len(C1)), weights_or_uniform(q, len(C2))
    keep_p, keep_q = p > 0, q > 0
    C1, C2, p, q = C1[np.ix_(keep_p, keep_p)], C2[np.ix_(keep_q, keep_q)], p[keep_p], q[keep_q]
    r = 2 if loss == "square_loss" else 1
    raw = lifted_cost(C1, C2, r)
    L = (raw + raw.T) / 2
    state = _random_state(np.random.default_rng(seed), L, spread * np.abs(L).max())
    rows = _rlt_bound.row_bounds(state, p, q)
    bound, plan, _ = _rlt_bound.outer_bound(state.h, rows.g, p, q)
    assert rows.complete
    assert bound <= min(coupling_costs(C1, C2, p, q, loss, seed, k=6)) + 1e-12
    assert np.allclose(plan.sum(1), p) and np.allclose(plan.sum(0), q)


def test_ascent_steps_never_lose_the_bound_by_more_than_round_off():
    C1, C2 = pair("barabasi_albert", 7, 2)
    res = gwlite.gromov_wasserstein(C1, C2, method="rlt", max_iter=40, tol=1e-12)
    history = np.array(res.diagnostics["history"])
    assert np.all(np.diff(history) >= -1e-12)


def test_beats_tlb_on_a_real_graph_pair():
    C1, p = gwlite.from_networkx(nx.florentine_families_graph(), "shortest_path")
    C2, q = gwlite.from_networkx(nx.petersen_graph(), "shortest_path")
    res = gwlite.gromov_wasserstein(C1, C2, p, q, method="rlt", max_iter=15)
    tlb = float(gwlite.lower_bound(C1, C2, p, q, lower="tlb"))
    assert res.diagnostics["rlt_bound"] > tlb * 1.05
    assert res.lower <= min(coupling_costs(C1, C2, p, q, "square_loss")) + 1e-12


# ---------------------------------------------------------------- early stop, scale
def test_stopped_early_by_the_time_limit_keeps_a_valid_bound():
    C1, C2 = pair("erdos_renyi", 8, 4)
    costs = coupling_costs(C1, C2, uniform(8), uniform(8), "square_loss")
    for limit in (1e-4, 0.05, 0.3):
        res = gwlite.gromov_wasserstein(C1, C2, method="rlt", time_limit=limit)
        assert res.lower <= min(costs) + 1e-12
        # the ascent checks the clock every 64 rows (the upper side's CG is not
        # interruptible: the total is not asserted on a shared machine)
        assert res.diagnostics["ascent_time_s"] <= limit + 1.0
    res = gwlite.gromov_wasserstein(C1, C2, method="rlt", time_limit=1e-4)
    assert res.diagnostics["stop_reason"] in ("time limit", "certified", "stalled")


def test_a_deadline_inside_the_rows_abandons_the_iteration():
    C1, C2 = pair("sbm", 6, 1)
    L = lifted_cost(C1, C2, 2)
    rows = _rlt_bound.row_bounds(_rlt_bound.initial_state(L), uniform(6), uniform(6), -math.inf)
    assert not rows.complete
    best, plan, its, reason, _ = _rlt_bound.run_ascent(
        L, uniform(6), uniform(6), max_iter=5, deadline=-math.inf, stop=lambda b: False
    )
    assert (best, plan, its, reason) == (-math.inf, None, 0, "time limit")


@pytest.mark.parametrize("k", [-20, -7, 0, 9, 20])
def test_scale_covariance(k):
    C1, C2 = pair("random_geometric", 7, 1)
    ref = gwlite.gromov_wasserstein(C1, C2, method="rlt", max_iter=8, tol=1e-12)
    s = 2.0**k
    res = gwlite.gromov_wasserstein(C1 * s, C2 * s, method="rlt", max_iter=8, tol=1e-12)
    # a power of two: the same computation on the same scaled problem, exactly
    assert res.diagnostics["rlt_bound"] == ref.diagnostics["rlt_bound"] * s**2
    assert res.upper == pytest.approx(ref.upper * s**2, rel=1e-12)
    s = 3.0 ** (k / 2)  # any unit: the same bound up to round-off
    res = gwlite.gromov_wasserstein(C1 * s, C2 * s, method="rlt", max_iter=8, tol=1e-12)
    assert res.diagnostics["rlt_bound"] == pytest.approx(
        ref.diagnostics["rlt_bound"] * s**2, rel=1e-9
    )


def test_isomorphic_inputs_are_certified():
    C, _ = generate("tree_metric", 6, seed=2)
    perm = np.array([3, 1, 5, 0, 2, 4])
    res = gwlite.gromov_wasserstein(C, C[np.ix_(perm, perm)], method="rlt")
    assert res.certified and res.lower == res.upper == 0.0


def test_estimate_grows_with_the_size():
    assert rlt.estimate_seconds(34, 77) > rlt.estimate_seconds(15, 32) > 0
    assert rlt.estimate_seconds(10, 10, iterations=20) == pytest.approx(
        20 * rlt.estimate_seconds(10, 10)
    )


# ---------------------------------------------------------------- input contract
def test_too_large_is_refused_with_the_alternatives():
    C = np.ones((8, 8)) - np.eye(8)
    with pytest.raises(gwlite.GWInputError, match="max_size=40.*lower='tlb'"):
        gwlite.gromov_wasserstein(C, C, method="rlt", max_size=40)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"time_limit": 0}, "time_limit"),
        ({"time_limit": "1"}, "time_limit"),
        ({"tol": 0.0}, "tol"),
        ({"tol": 2}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_size": -3}, "max_size"),
        ({"lower": "nope"}, "lower"),
        ({"G0": np.ones((2, 2))}, "G0"),
        ({"G0": -np.ones((4, 4))}, "G0"),
        ({"epsilon": 1.0}, "unknown option"),
    ],
)
def test_bad_options_are_refused(options, match):
    C = np.ones((4, 4)) - np.eye(4)
    with pytest.raises(gwlite.GWInputError, match=match):
        gwlite.gromov_wasserstein(C, C, method="rlt", **options)


def test_a_batch_is_refused():
    C = np.stack([np.ones((3, 3)) - np.eye(3)] * 2)
    with pytest.raises(gwlite.GWInputError, match="shape"):
        gwlite.gromov_wasserstein(C, C, method="rlt")
    from gwlite.problem import make_problem

    problem = make_problem(C, C, None, None, "square_loss", batch=True)
    with pytest.raises(gwlite.GWInputError, match="batch"):
        rlt.solve(problem)


def test_G0_is_used_on_the_upper_side():
    C1, C2 = pair("barabasi_albert", 6, 3)
    _, perm = best_permutation(C1, C2)
    G0 = permutation_matrix(perm)
    res = gwlite.gromov_wasserstein(C1, C2, method="rlt", G0=G0, max_iter=2)
    assert res.upper <= gw_cost_dense(C1, C2, G0) + 1e-12
    assert "G0" in res.diagnostics["candidates"]


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["time_limit", "tol", "max_iter", "max_size"]),
    st.one_of(
        st.floats(max_value=0.0),
        st.floats(allow_nan=True).filter(lambda x: not np.isfinite(x)),
        st.text(max_size=3),
        st.booleans(),
    ),
)
def test_bad_option_values_name_the_option(name, value):
    C = np.ones((3, 3)) - np.eye(3)
    with pytest.raises(gwlite.GWInputError, match=name):
        gwlite.gromov_wasserstein(C, C, method="rlt", **{name: value})


# ---------------------------------------------------------------- auto's gate
def test_auto_runs_the_ascent_when_it_fits_and_skips_it_otherwise(monkeypatch):
    from gwlite.solvers import sdp

    # the ascent is auto's stage when the relaxation's ADMM does not fit the budget
    monkeypatch.setattr(sdp, "fits_budget", lambda n, m, seconds: False)
    C1, p = gwlite.from_networkx(nx.florentine_families_graph(), "shortest_path")
    C2, q = gwlite.from_networkx(nx.petersen_graph(), "shortest_path")
    assert rlt.fits_budget(len(C1), len(C2), 5.0)
    res = gwlite.gromov_wasserstein(C1, C2, p, q, time_limit=6.0, progress=False)
    stages = {s["stage"]: s for s in res.diagnostics["stages"]}
    assert "rlt" in stages
    if "skipped" not in stages["rlt"]:
        assert res.lower <= min(coupling_costs(C1, C2, p, q, "square_loss")) + 1e-12
    assert not rlt.fits_budget(34, 77, 10.0) and rlt.fits_budget(34, 77, 600.0)
    assert not rlt.fits_budget(100, 100, 1e9)  # beyond DEFAULT_MAX_SIZE: never
