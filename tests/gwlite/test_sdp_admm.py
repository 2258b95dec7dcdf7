"""method="sdp" with solver="admm": the bound as a bound, early stops, scale, contract.

Every bound is compared with couplings built here (all permutations at tiny n, random
couplings, POT's conditional gradient from several starts, the certified optimum of
``method="exact"``), never with the solver's own numbers. The certificate is checked for
arbitrary linear parts (it must be a bound whatever ADMM returns) and after any number
of iterations.
"""

from __future__ import annotations

import time

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import best_permutation, gw_cost_dense, random_coupling

import gwlite
from gwlite.families import generate
from gwlite.solvers import _sdp_admm, _sdp_model, sdp

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loss_name(r: int) -> str:
    return "square_loss" if r == 2 else "abs_loss"


def coupling_costs(C1, C2, p, q, loss, rng, k=10, starts=4):
    """Costs of couplings built without the solver: random ones, the product coupling and
    (square loss) POT's conditional gradient from ``starts`` random starts."""
    plans = [random_coupling(rng, p, q) for _ in range(k)] + [np.outer(p, q)]
    if loss == "square_loss":
        import ot

        plans += [ot.gromov.gromov_wasserstein(C1, C2, p, q, G0=T) for T in plans[:starts]]
    return [gw_cost_dense(C1, C2, T, loss) for T in plans]


@st.composite
def instances(draw, max_n=4):
    n, m = draw(st.integers(2, max_n)), draw(st.integers(2, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    C1, C2 = rng.normal(size=(n, n)), rng.normal(size=(m, m))
    if draw(st.booleans()):
        C1, C2 = C1 + C1.T, C2 + C2.T
    p, q = rng.random(n) + 0.05, rng.random(m) + 0.05
    return C1, C2, p / p.sum(), q / q.sum(), draw(st.sampled_from([1, 2])), rng


def dense_parts(C1, C2, r):
    raw = _sdp_model.lifted_cost(C1, C2, r)
    return (raw + raw.T) / 2, (np.abs(raw) + np.abs(raw.T)) / 2


# ---------------------------------------------------------------- the certificate
@SETTINGS
@given(instances(), st.floats(0, 3), st.booleans())
def test_certificate_is_a_bound_for_any_linear_part(inst, spread, scaled):
    """Any symmetric linear part, negative entries included, gives a lower bound."""
    C1, C2, p, q, r, rng = inst
    L, L_abs = dense_parts(C1, C2, r)
    N1 = len(p) * len(q) + 1
    noise = rng.normal(size=(N1, N1)) * spread
    linear = (noise + noise.T) / 2
    linear[1:, 1:] += L * rng.random()
    cert = _sdp_model.certify_linear(L, L_abs, p, q, linear, scaled=scaled)
    costs = coupling_costs(C1, C2, p, q, loss_name(r), rng, starts=1)
    assert np.isfinite(cert.bound) and cert.correction >= 0
    assert cert.bound <= min(costs) + 1e-12


@SETTINGS
@given(instances(), st.integers(0, 60))
def test_any_number_of_iterations_gives_a_bound(inst, k):
    """Stopping ADMM after any k iterations leaves a valid bound (both certificates)."""
    C1, C2, p, q, r, rng = inst
    L, L_abs = dense_parts(C1, C2, r)
    model = _sdp_admm.build(L, L_abs, p, q)
    state = _sdp_admm.initial_state(model)
    for _ in range(k):
        state = _sdp_admm.step(model, state)
    linear = _sdp_admm.multiplier(model, state)
    linear[1:, 1:] += L
    costs = coupling_costs(C1, C2, p, q, loss_name(r), rng)
    for scaled in (True, False):
        cert = _sdp_model.certify_linear(L, L_abs, p, q, linear, scaled=scaled)
        assert cert.bound <= min(costs) + 1e-12


def test_box_and_trace_bounds_hold_for_couplings():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n, m = rng.integers(2, 6, size=2)
        p, q = rng.random(n) + 0.01, rng.random(m) + 0.01
        p, q = p / p.sum(), q / q.sum()
        x = random_coupling(rng, p, q).ravel()
        z = np.concatenate([[1.0], x])
        Z = np.outer(z, z)
        assert np.all(Z <= _sdp_model.box_upper(p, q))
        u = np.concatenate([[1.0], np.minimum(p[:, None], q[None, :]).ravel()])
        assert np.trace(Z / np.outer(u, u)) <= _sdp_model.scaled_trace_bound(p, q)


@SETTINGS
@given(st.integers(2, 9), st.integers(2, 9), st.integers(0, 2**32 - 1), st.booleans())
def test_scaled_trace_bound_holds_at_the_vertices(n, m, seed, uniform):
    """T_D bounds tr(D^-1 Z D^-1) for the lift of every coupling; the largest values are
    at vertices (the bound is a linear programme's maximum), tight for permutations."""
    import ot

    rng = np.random.default_rng(seed)
    if uniform:
        p, q = np.full(n, 1 / n), np.full(m, 1 / m)
    else:
        p, q = rng.random(n) + 0.01, rng.random(m) + 0.01
        p, q = p / p.sum(), q / q.sum()
    T_D = _sdp_model.scaled_trace_bound(p, q)
    u = np.minimum(p[:, None], q[None, :])
    assert T_D <= 1 + min(n + m, 1 / u.min()) + 1e-9  # never looser than before
    for cost in [rng.standard_normal((n, m)) for _ in range(5)] + [-1 / u]:
        x = ot.emd(p, q, cost - cost.min())  # non-negative: POT's simplex needs it
        assert 1 + float(np.sum((x / u) ** 2)) <= T_D
    if uniform and n == m:  # a permutation reaches it: 1 + n
        assert T_D <= 1 + n + 1e-9


def test_iterates_stay_in_the_box_and_the_kernel():
    C1, C2 = generate("tree", 5, 0)[0], generate("tree", 4, 1)[0]
    p, q = np.full(5, 0.2), np.full(4, 0.25)
    L, L_abs = dense_parts(C1 / C1.max(), C2 / C2.max(), 2)
    model = _sdp_admm.build(L, L_abs, p, q)
    state = _sdp_admm.initial_state(model)
    for _ in range(30):
        state = _sdp_admm.step(model, state)
    assert state.Y.min() >= 0 and state.Y.max() <= 1 and state.Y[0, 0] == 1
    # Z is PSD with its range in ker(K D)
    K = _sdp_model.marginal_operator(p, q) * model.d[None, :]
    assert np.abs(K @ state.Z).max() <= 1e-10
    assert np.linalg.eigvalsh(state.Z).min() >= -1e-10


def test_single_precision_iterations_keep_the_bound_valid():
    """From order SINGLE_PRECISION_ORDER on the projection runs in float32: it stays
    close to the float64 projection, and the certified bound stays below every
    coupling's cost (it is computed in float64 from the multiplier)."""
    rng = np.random.default_rng(5)
    n, m = 20, 21
    assert n * m + 1 >= _sdp_admm.SINGLE_PRECISION_ORDER
    C1, C2 = generate("tree", n, 0)[0], generate("erdos_renyi", m, 1)[0]
    p, q = np.full(n, 1 / n), np.full(m, 1 / m)
    L, L_abs = dense_parts(C1 / C1.max(), C2 / C2.max(), 2)
    model = _sdp_admm.build(L, L_abs, p, q)
    state = _sdp_admm.initial_state(model)
    for _ in range(15):
        state = _sdp_admm.step(model, state)
    X = state.Y + state.Lam / state.beta
    Z, _ = _sdp_admm._psd_part(X)
    lam, V = np.linalg.eigh(X)
    Z64 = (V * np.maximum(lam, 0)) @ V.T
    assert np.abs(Z - Z64).max() <= 1e-5 * max(1.0, np.abs(X).max())
    linear = _sdp_admm.multiplier(model, state)
    linear[1:, 1:] += L
    cert = _sdp_model.certify_linear(L, L_abs, p, q, linear)
    costs = coupling_costs(C1 / C1.max(), C2 / C2.max(), p, q, "square_loss", rng)
    assert np.isfinite(cert.bound) and cert.bound <= min(costs) + 1e-12


# ---------------------------------------------------------------- through the API
@pytest.mark.parametrize("family, n, seed", [("erdos_renyi", 5, 0), ("barabasi_albert", 5, 1)])
def test_bound_below_every_permutation_and_coupling(family, n, seed):
    C1, C2 = generate(family, n, 2 * seed)[0], generate(family, n, 2 * seed + 1)[0]
    p = np.full(n, 1 / n)
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="admm", max_iter=400)
    best, _ = best_permutation(C1, C2)
    costs = coupling_costs(C1, C2, p, p, "square_loss", np.random.default_rng(seed), starts=8)
    assert res.diagnostics["solver"] == "admm"
    assert res.diagnostics["sdp_bound"] <= min(min(costs), best) + 1e-12
    assert res.lower <= res.upper <= best + 1e-12


@pytest.mark.parametrize("family", ["gram", "euclidean"])
def test_bound_below_exact_certified_optimum(family):
    C1, C2 = generate(family, 6, 0)[0], generate(family, 6, 1)[0]
    ex = gwlite.gromov_wasserstein(C1, C2, method="exact")
    assert ex.certified  # the permutation optimum is GW (Theorem 1 of theory_exact)
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="admm", max_iter=300)
    assert res.diagnostics["sdp_bound"] <= ex.value + 1e-12


def test_admm_reaches_the_conic_bound():
    """Run long enough, ADMM's certified bound matches SCS's within 1e-3 of the scale and
    beats TLB (the relaxation dominates it)."""
    C1, C2 = generate("barabasi_albert", 5, 6)[0], generate("barabasi_albert", 5, 7)[0]
    scale = max(C1.max(), C2.max()) ** 2
    admm = gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="admm", max_iter=5000)
    tlb = float(gwlite.lower_bound(C1, C2, lower="tlb"))
    assert admm.diagnostics["sdp_bound"] >= tlb - 1e-9 * scale
    if sdp.available("scs"):
        scs = gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="scs")
        ref = scs.diagnostics["sdp_bound"]
        assert admm.diagnostics["sdp_bound"] >= ref - 1e-3 * scale
        assert admm.diagnostics["sdp_bound"] <= scs.upper + 1e-12


@pytest.mark.parametrize("r", [1, 2])
def test_scale_covariance(r):
    """Powers of two: the certified bound of 2^k C at an iteration is exactly 2^(k r) times
    that of C (the solver sees C / s, the same numbers)."""
    C1, C2 = generate("tree", 4, 0)[0], generate("sbm", 5, 1)[0]
    loss = loss_name(r)
    ref = gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="admm", max_iter=50, loss_fun=loss)
    ref_last = ref.diagnostics["history"][-1]
    for k in (-20, -7, 0, 9, 20):
        s = 2.0**k
        res = gwlite.gromov_wasserstein(
            s * C1, s * C2, method="sdp", solver="admm", max_iter=50, loss_fun=loss
        )
        # which iterates are certified depends on timing; the last one always is
        (it, bound), (ref_it, ref_bound) = res.diagnostics["history"][-1], ref_last
        assert it == ref_it == 50 and bound == ref_bound * s**r
        assert res.upper == pytest.approx(ref.upper * s**r, rel=1e-12)


def test_time_limit_is_checked_every_iteration():
    C1 = generate("erdos_renyi", 16, 0)[0]
    C2 = generate("erdos_renyi", 17, 1)[0]
    tick = time.perf_counter()
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="admm", time_limit=3.0)
    wall = time.perf_counter() - tick
    assert res.diagnostics["stop_reason"] in ("time limit", "certified", "stalled")
    # generous: the machine is shared; the point is that a 272-entry problem stops
    assert wall < 30.0
    costs = coupling_costs(
        C1,
        C2,
        np.full(16, 1 / 16),
        np.full(17, 1 / 17),
        "square_loss",
        np.random.default_rng(0),
        k=3,
        starts=2,
    )
    assert res.lower <= min(costs) + 1e-12


def test_auto_runs_admm_when_enough_iterations_fit():
    C1, p = gwlite.from_networkx(nx.florentine_families_graph(), "shortest_path")
    C2, q = gwlite.from_networkx(nx.petersen_graph(), "shortest_path")
    assert sdp.fits_budget(len(C1), len(C2), 20.0) and not sdp.fits_budget(34, 77, 60.0)
    assert not sdp.fits_budget(70, 70, 1e9)  # beyond ADMM_MAX_SIZE: never
    res = gwlite.gromov_wasserstein(C1, C2, p, q, time_limit=20.0, progress=False)
    stages = {s["stage"]: s for s in res.diagnostics["stages"]}
    assert "sdp" in stages and "rlt" not in stages
    costs = coupling_costs(C1, C2, p, q, "square_loss", np.random.default_rng(0), starts=4)
    assert res.lower <= min(costs) + 1e-12


def test_default_solver_by_size():
    small = generate("tree", 5, 0)[0]
    big = generate("tree", 11, 0)[0]
    res = gwlite.gromov_wasserstein(small, small, method="sdp")
    assert res.diagnostics["solver"] == ("scs" if sdp.available("scs") else "admm")
    res = gwlite.gromov_wasserstein(big, big, method="sdp", max_iter=20)
    assert res.diagnostics["solver"] == "admm" and res.diagnostics["iterations"] <= 20


@pytest.mark.parametrize(
    "options, match",
    [
        ({"max_iter": 0}, "max_iter must be"),
        ({"max_iter": 2.5}, "max_iter must be"),
        ({"max_size": 5}, "max_size=5"),
    ],
)
def test_bad_options_are_refused(options, match):
    with pytest.raises(gwlite.GWInputError, match=match):
        gwlite.gromov_wasserstein(np.eye(3), np.eye(3), method="sdp", solver="admm", **options)


def test_G0_is_checked_and_rounded():
    # any non-negative plan is a start (auto passes plans with loose marginals): rounded
    C1, C2 = generate("tree", 4, 0)[0], generate("tree", 4, 1)[0]
    res = gwlite.gromov_wasserstein(
        C1, C2, method="sdp", solver="admm", G0=np.ones((4, 4)), max_iter=5
    )
    assert "G0" in res.diagnostics["candidates"]
    assert res.diagnostics["candidates"]["G0"] == pytest.approx(
        gw_cost_dense(C1, C2, np.full((4, 4), 1 / 16)), rel=1e-12
    )
    with pytest.raises(gwlite.GWInputError, match="non-negative"):
        gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="admm", G0=-np.ones((4, 4)))
    with pytest.raises(gwlite.GWInputError, match="shape"):
        gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="admm", G0=np.ones((3, 4)))


def test_conic_solver_above_its_size_warns_about_the_time_limit():
    import warnings

    with pytest.warns(UserWarning, match="cannot be interrupted"):
        sdp._warn_uninterruptible("scs", 420, 120.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdp._warn_uninterruptible("admm", 420, 120.0)
        sdp._warn_uninterruptible("scs", 64, 120.0)
        sdp._warn_uninterruptible("scs", 420, None)


def test_auto_runs_admm_without_a_conic_solver(monkeypatch):
    """ADMM needs only NumPy: auto's sdp stage runs it when SCS is not installed."""
    monkeypatch.setattr(sdp, "available", lambda solver="scs": solver == "admm")
    C1, p = gwlite.from_networkx(nx.florentine_families_graph(), "shortest_path")
    C2, q = gwlite.from_networkx(nx.petersen_graph(), "shortest_path")
    res = gwlite.gromov_wasserstein(C1, C2, p, q, time_limit=20.0, progress=False)
    stages = {s["stage"]: s for s in res.diagnostics["stages"]}
    assert "sdp" in stages and "skipped" not in stages["sdp"]
