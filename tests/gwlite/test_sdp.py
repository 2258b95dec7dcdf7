"""method="sdp": the certified bound as a bound, its certificate, the upper side, bad input.

Every ``lower`` is checked against couplings built here (random, conditional gradient,
all permutations), never against the solver's own numbers; the certificate is checked
for arbitrary multipliers (it must be a bound whatever the solver returns).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import best_permutation, gw_cost_dense, permutation_matrix, random_coupling

import gwlite
from gwlite.families import generate
from gwlite.problem import make_problem
from gwlite.solvers import _sdp_conic, _sdp_model, sdp

pytestmark = pytest.mark.skipif(not sdp.available(), reason="needs gwlite[certify] (SCS)")

LOSSES = ("square_loss", "abs_loss")
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pair(family, n, seed):
    return generate(family, n, 2 * seed)[0], generate(family, n, 2 * seed + 1)[0]


def tlb(C1, C2, p=None, q=None, loss="square_loss"):
    return float(gwlite.lower_bound(C1, C2, p, q, loss_fun=loss, lower="tlb"))


def coupling_costs(C1, C2, p, q, loss, seed=0, k=20):
    """Costs of couplings built without the solver: random ones and, for square loss,
    POT's conditional gradient from random starts. Each is >= GW."""
    rng = np.random.default_rng(seed)
    plans = [random_coupling(rng, p, q) for _ in range(k)] + [np.outer(p, q)]
    if loss == "square_loss":
        import ot

        plans += [ot.gromov.gromov_wasserstein(C1, C2, p, q, G0=plan) for plan in plans[:3]]
    return [gw_cost_dense(C1, C2, T, loss) for T in plans]


def uniform(n):
    return np.full(n, 1.0 / n)


# ---------------------------------------------------------------- lower is a bound
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(
    "family, n, seed",
    [("erdos_renyi", 6, 0), ("barabasi_albert", 6, 1), ("tree", 7, 0), ("sbm", 5, 2)],
)
def test_lower_below_every_coupling_and_above_tlb(family, n, seed, loss):
    C1, C2 = pair(family, n, seed)
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp", loss_fun=loss)
    best, perm = best_permutation(C1, C2, loss)
    costs = coupling_costs(C1, C2, uniform(n), uniform(n), loss, seed)
    costs.append(gw_cost_dense(C1, C2, np.asarray(res.coupling), loss))
    assert res.lower <= best + 1e-12  # GW over couplings can be below it, never above
    assert res.lower <= min(costs) + 1e-12
    # the relaxation's own bound dominates TLB (in exact arithmetic; here up to tol)
    # when it ran to its end (not stopped because another bound already certified GW)
    if res.diagnostics["stop_reason"] != "certified by another bound":
        assert res.diagnostics["sdp_bound"] >= tlb(C1, C2, loss=loss) - 1e-6
    # upper is exactly the cost of the returned (feasible) coupling
    T = np.asarray(res.coupling)
    assert np.allclose(T.sum(1), 1 / n, atol=1e-12) and np.allclose(T.sum(0), 1 / n, atol=1e-12)
    assert res.upper == pytest.approx(costs[-1], rel=1e-12, abs=1e-15)
    assert res.upper <= best + 1e-12  # the permutation optimum is among the candidates


@pytest.mark.parametrize("family", ["erdos_renyi", "sbm", "tree"])
def test_small_graphs_are_certified(family):
    # pairs where the relaxation is tight (not all are: see the next test)
    C1, C2 = pair(family, 6, 3)
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp")
    best, _ = best_permutation(C1, C2)
    assert res.certified and res.converged
    assert res.upper - res.lower <= sdp.DEFAULT_TOL * max(C1.max(), C2.max()) ** 2
    # certified below the permutation optimum would contradict the best coupling found
    assert res.upper <= best + 1e-12


def test_a_loose_relaxation_is_reported_as_an_interval():
    # the relaxation is not tight here: a proven interval, certified False
    C1, C2 = pair("barabasi_albert", 6, 3)
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp")
    costs = coupling_costs(C1, C2, uniform(6), uniform(6), "square_loss")
    assert not res.certified and res.gap > 1e-3
    assert res.lower <= min(costs) + 1e-12
    assert res.upper < best_permutation(C1, C2)[0] - 1e-3  # a coupling beats permutations
    assert res.lower > tlb(C1, C2) + 1e-3  # and the relaxation still beats TLB


@pytest.mark.parametrize("family", ["gram", "euclidean"])
def test_relaxation_alone_reaches_the_certified_exact_value(family, monkeypatch):
    C1, C2 = pair(family, 6, 0)
    ex = gwlite.gromov_wasserstein(C1, C2, method="exact")
    assert ex.certified  # Theorem 1: the permutation optimum is GW
    scale = max(np.abs(C1).max(), np.abs(C2).max()) ** 2
    # with it, the answer is certified at once (exact's theorem-backed bound)
    quick = gwlite.gromov_wasserstein(C1, C2, method="sdp")
    assert quick.certified and quick.diagnostics["lower_kind"] == "exact"
    assert quick.diagnostics["stop_reason"] == "certified by another bound"
    # without exact's bound (and with the weakest sorting bound) the relaxation alone
    # must reach the same value
    real = sdp.first_candidates

    def without_exact_bound(*args):
        real(*args)
        return -np.inf

    monkeypatch.setattr(sdp, "first_candidates", without_exact_bound)
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp", lower="mean_row")
    assert res.diagnostics["lower_kind"] == "sdp" and res.certified
    assert res.lower <= ex.value + 1e-12 * scale
    assert res.diagnostics["sdp_bound"] == pytest.approx(ex.value, abs=1e-6 * scale)
    assert res.upper == pytest.approx(ex.value, rel=1e-9)


def test_below_gw_where_couplings_beat_permutations():
    # GW(K2, I2) = 1/2 (the uniform coupling) while both permutations cost 1
    C = np.array([[0.0, 1.0], [1.0, 0.0]])
    res = gwlite.gromov_wasserstein(C, np.eye(2), method="sdp")
    assert res.lower <= 0.5 + 1e-12
    assert res.upper == pytest.approx(0.5, abs=1e-9)
    assert res.certified


@pytest.mark.parametrize("loss", LOSSES)
def test_weights_and_unequal_sizes(loss):
    rng = np.random.default_rng(4)
    C1 = generate("erdos_renyi", 5, 1)[0]
    C2 = generate("tree_metric", 4, 2)[0]
    p = rng.random(5) + 0.1
    p /= p.sum()
    q = np.array([0.4, 0.0, 0.35, 0.25])  # a node without mass
    res = gwlite.gromov_wasserstein(C1, C2, p, q, method="sdp", loss_fun=loss)
    costs = coupling_costs(C1, C2, p, q, loss, seed=1)
    T = np.asarray(res.coupling)
    assert T.shape == (5, 4) and np.allclose(T[:, 1], 0)
    assert np.abs(T.sum(1) - p).sum() < 1e-12 and np.abs(T.sum(0) - q).sum() < 1e-12
    assert res.lower <= min(costs) + 1e-12
    assert res.lower >= tlb(C1, C2, p, q, loss) - 1e-12
    assert res.upper == pytest.approx(gw_cost_dense(C1, C2, T, loss), rel=1e-12)


def test_one_node_is_exact_without_solver():
    C2 = generate("tree_metric", 3, 0)[0]
    res = gwlite.gromov_wasserstein(np.zeros((1, 1)), C2, method="sdp")
    T = np.full((1, 3), 1 / 3)
    assert res.certified and res.lower == res.upper == pytest.approx(
        gw_cost_dense(np.zeros((1, 1)), C2, T)
    )


# ---------------------------------------------------------------- early stopping
def test_bound_stays_valid_when_the_solver_is_stopped_early(monkeypatch):
    C1, C2 = pair("erdos_renyi", 6, 0)
    best, _ = best_permutation(C1, C2)
    costs = coupling_costs(C1, C2, uniform(6), uniform(6), "square_loss")
    full = gwlite.gromov_wasserstein(C1, C2, method="sdp")
    monkeypatch.setattr(_sdp_conic, "CHUNK_ITERS", 10)
    monkeypatch.setattr(sdp, "_MAX_ITER", 10)
    early = gwlite.gromov_wasserstein(C1, C2, method="sdp")
    assert early.diagnostics["stop_reason"] == "max_iter" and not early.converged
    assert early.diagnostics["sdp_bound"] <= min(costs + [best]) + 1e-12
    assert early.diagnostics["sdp_bound"] < full.diagnostics["sdp_bound"]  # weaker, not wrong
    assert early.lower >= tlb(C1, C2) - 1e-12  # the sorting bound still backs it up
    assert not early.certified or early.gap <= sdp.DEFAULT_TOL


@pytest.mark.parametrize("solver", ["scs", "clarabel"])
def test_bound_stays_valid_with_a_loose_tolerance(solver):
    if not sdp.available(solver):
        pytest.skip(f"{solver} not installed")
    C1, C2 = pair("barabasi_albert", 5, 0)
    best, _ = best_permutation(C1, C2)
    loose = gwlite.gromov_wasserstein(C1, C2, method="sdp", tol=0.3, solver=solver)
    assert loose.diagnostics["sdp_bound"] <= best + 1e-12
    assert loose.diagnostics["solver"] == solver
    assert loose.certified == (loose.gap <= 0.3 * max(C1.max(), C2.max()) ** 2)


def test_time_limit_is_respected_and_bound_valid():
    C1, C2 = pair("erdos_renyi", 7, 1)
    best, _ = best_permutation(C1, C2)
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp", time_limit=0.05)
    assert res.lower <= best + 1e-12
    assert res.time_s < 5.0  # the limit plus building the model and one chunk


def test_certified_only_when_the_gap_is_below_tol():
    C1, C2 = pair("tree", 6, 2)
    for tol in (1e-6, 1e-2):
        res = gwlite.gromov_wasserstein(C1, C2, method="sdp", tol=tol)
        assert res.certified == (res.gap <= tol * max(C1.max(), C2.max()) ** 2)


# ---------------------------------------------------------------- the certificate
@st.composite
def tiny_instances(draw):
    n, m = draw(st.integers(2, 4)), draw(st.integers(2, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    C1, C2 = rng.normal(size=(n, n)), rng.normal(size=(m, m))
    if draw(st.booleans()):
        C1, C2 = C1 + C1.T, C2 + C2.T
    p, q = rng.random(n) + 0.05, rng.random(m) + 0.05
    return C1, C2, p / p.sum(), q / q.sum(), draw(st.sampled_from([1, 2])), rng


@SETTINGS
@given(tiny_instances(), st.floats(-5, 5), st.floats(0, 3))
def test_certificate_is_a_bound_for_arbitrary_multipliers(inst, y0, spread):
    """Weak duality with the eigenvalue correction: any (y0, w) gives a lower bound."""
    C1, C2, p, q, r, rng = inst
    model = _sdp_model.build_model(C1, C2, p, q, r)
    w = rng.normal(size=model.nonneg.shape[0]) * spread  # negative entries get clipped
    cert = _sdp_model.certify(model, y0, w)
    loss = "square_loss" if r == 2 else "abs_loss"
    costs = [gw_cost_dense(C1, C2, random_coupling(rng, p, q), loss) for _ in range(10)]
    assert np.isfinite(cert.bound)
    assert cert.bound <= min(costs) + 1e-12
    assert cert.correction >= 0 and cert.bound <= cert.dual_value


@SETTINGS
@given(tiny_instances())
def test_solved_bound_below_couplings_and_above_tlb(inst):
    C1, C2, p, q, r, rng = inst
    loss = "square_loss" if r == 2 else "abs_loss"
    res = gwlite.gromov_wasserstein(C1, C2, p, q, method="sdp", loss_fun=loss)
    costs = coupling_costs(C1, C2, p, q, loss, k=8)
    T = np.asarray(res.coupling)
    assert res.lower <= min(costs) + 1e-10
    assert res.lower <= res.upper
    assert res.upper == pytest.approx(gw_cost_dense(C1, C2, T, loss), rel=1e-9, abs=1e-12)
    scale = max(np.abs(C1).max(), np.abs(C2).max()) ** r
    if res.diagnostics["stop_reason"] in ("certified", "solver converged", "stalled"):
        assert res.diagnostics["sdp_bound"] >= tlb(C1, C2, p, q, loss) - 1e-5 * scale


def test_trace_bound_holds_for_couplings():
    rng = np.random.default_rng(0)
    p, q = rng.random(4) + 0.1, rng.random(3) + 0.1
    p, q = p / p.sum(), q / q.sum()
    model = _sdp_model.build_model(np.eye(4), np.eye(3), p, q, 2)
    for _ in range(50):
        x = random_coupling(rng, p, q)
        assert 1 + (x * x).sum() <= model.trace_bound
    assert model.trace_bound <= 2.0


def test_kernel_basis_spans_the_lifted_constraints():
    p, q = uniform(3), np.array([0.2, 0.3, 0.5])
    U = _sdp_model.kernel_basis(p, q).toarray()
    K = np.hstack(
        [
            -np.concatenate([p, q])[:, None],
            np.vstack([np.kron(np.eye(3), np.ones(3)), np.kron(np.ones(3), np.eye(3))]),
        ]
    )
    assert np.abs(K @ U).max() < 1e-15
    assert np.linalg.matrix_rank(U) == U.shape[1] == (3 - 1) * (3 - 1) + 1
    assert np.linalg.matrix_rank(K) + U.shape[1] == K.shape[1]  # a basis of ker K


def test_moment_and_svec_round_trip():
    rng = np.random.default_rng(1)
    p, q = uniform(3), uniform(4)
    model = _sdp_model.build_model(rng.random((3, 3)), rng.random((4, 4)), p, q, 2)
    x = random_coupling(rng, p, q)
    z = np.concatenate([[1.0], x.ravel()])
    c = np.linalg.lstsq(model.U.toarray(), z, rcond=None)[0]  # U c = (1, x)
    Y = np.outer(c, c)
    rows, cols = _sdp_model._upper_by_columns(model.r)
    svec = Y[rows, cols] * np.where(rows == cols, 1.0, np.sqrt(2))
    assert np.allclose(_sdp_model.svec_matrix(model.r) @ svec, Y.ravel())
    assert np.allclose(_sdp_model.moment(model, svec), x)
    # the objective and the non-negativity rows see Z = z z^T
    Z = np.outer(z, z)
    assert np.allclose(model.nonneg @ svec, Z[model.pairs])
    assert model.cost @ svec == pytest.approx(z[1:] @ model.L @ z[1:])


def test_rigorous_lambda_min_is_below_the_spectrum():
    rng = np.random.default_rng(2)
    for k in (1, 5, 40):
        Q = np.linalg.qr(rng.normal(size=(k, k)))[0]
        lam = np.sort(rng.normal(size=k)) * 10.0 ** rng.integers(-8, 3)
        S = (Q * lam) @ Q.T
        S = (S + S.T) / 2
        bound, margin = _sdp_model.rigorous_lambda_min(S)
        assert margin >= 0
        # every Rayleigh quotient is >= lambda_min >= bound
        V = rng.normal(size=(k, 200))
        assert bound <= np.min(np.einsum("ij,ik,kj->j", V, S, V) / np.einsum("ij,ij->j", V, V))
        assert bound <= lam[0] + 1e-12 * np.abs(lam).max()
        assert bound >= lam[0] - 1e-10 * max(np.abs(lam).max(), 1e-300)
    assert _sdp_model.rigorous_lambda_min(np.diag([3.0, -2.0, 1.0]))[0] <= -2.0


def test_scs_and_clarabel_agree():
    if not sdp.available("clarabel"):
        pytest.skip("clarabel not installed")
    C1, C2 = pair("erdos_renyi", 4, 1)
    a = gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="scs")
    b = gwlite.gromov_wasserstein(C1, C2, method="sdp", solver="clarabel")
    assert a.diagnostics["sdp_bound"] == pytest.approx(b.diagnostics["sdp_bound"], abs=1e-4)


# ---------------------------------------------------------------- upper side and G0
def test_G0_is_used_on_the_upper_side():
    C1, C2 = pair("tree", 6, 1)
    best, perm = best_permutation(C1, C2)
    p = uniform(6)
    res = gwlite.gromov_wasserstein(C1, C2, method="sdp", G0=permutation_matrix(perm))
    assert res.diagnostics["candidates"]["G0"] == pytest.approx(best, rel=1e-12)
    assert res.upper <= best + 1e-12
    with pytest.raises(gwlite.GWInputError, match="G0 must have shape"):
        gwlite.gromov_wasserstein(C1, C2, method="sdp", G0=np.ones((5, 6)))
    with pytest.raises(gwlite.GWInputError, match="non-negative"):
        gwlite.gromov_wasserstein(C1, C2, method="sdp", G0=-np.outer(p, p))


def test_diagnostics_report_the_certificate():
    C1, C2 = pair("erdos_renyi", 5, 0)
    d = gwlite.gromov_wasserstein(C1, C2, method="sdp").diagnostics
    for key in [
        "solver",
        "status",
        "primal_objective",
        "dual_objective",
        "sdp_bound",
        "lambda_min",
        "eigenvalue_correction",
        "trace_bound",
        "solve_time_s",
        "upper_kind",
        "candidates",
        "stop_reason",
    ]:
        assert key in d
    # the certified bound never exceeds the dual value it was built from
    assert d["sdp_bound"] <= d["dual_value"]
    assert d["eigenvalue_correction"] == pytest.approx(
        d["trace_bound"] * max(0.0, -d["lambda_min"]), rel=1e-12, abs=1e-300
    )


# ---------------------------------------------------------------- bad input
def test_too_large_is_refused_with_the_alternatives():
    C = generate("erdos_renyi", 11, 0)[0]
    with pytest.raises(gwlite.GWInputError, match="max_size=100") as err:
        gwlite.gromov_wasserstein(C, C, method="sdp", solver="scs")
    assert "exact" in str(err.value) and "tlb" in str(err.value)
    with pytest.raises(gwlite.GWInputError, match="max_size=9"):
        gwlite.gromov_wasserstein(np.eye(4), np.eye(3), method="sdp", max_size=9)


def test_missing_solver_names_the_extra(monkeypatch):
    monkeypatch.setattr(sdp, "available", lambda solver="scs": False)
    with pytest.raises(gwlite.GWInputError, match=r"pip install scs .*'certify' extra"):
        gwlite.gromov_wasserstein(np.eye(3), np.eye(3), method="sdp", solver="scs")


@pytest.mark.parametrize(
    "options, match",
    [
        ({"solver": "mosek"}, "unknown solver"),
        ({"tol": 0.0}, "tol must be"),
        ({"tol": 2.0}, "tol must be"),
        ({"time_limit": 0}, "time_limit"),
        ({"max_size": 0}, "max_size"),
        ({"max_size": 2.5}, "max_size"),
        ({"lower": "nope"}, "unknown lower bound"),
        ({"epsilon": 1.0}, "unknown option"),
    ],
)
def test_bad_options_are_refused(options, match):
    with pytest.raises(gwlite.GWInputError, match=match):
        gwlite.gromov_wasserstein(np.eye(3), np.eye(3), method="sdp", **options)


def test_zero_matrices_give_zero():
    res = gwlite.gromov_wasserstein(np.zeros((3, 3)), np.zeros((2, 2)), method="sdp")
    assert res.lower == res.upper == 0.0 and res.certified


def test_torch_inputs_keep_their_type():
    torch = pytest.importorskip("torch")
    C1, C2 = pair("tree", 4, 0)
    res = gwlite.gromov_wasserstein(torch.tensor(C1), torch.tensor(C2), method="sdp")
    assert isinstance(res.coupling, torch.Tensor) and res.certified
    ref = gwlite.gromov_wasserstein(C1, C2, method="sdp")
    assert res.upper == pytest.approx(ref.upper, rel=1e-12)


def test_problem_helper_used_by_auto():
    # method="auto" calls sdp.solve on a validated problem with G0 and time_limit
    C1, C2 = pair("sbm", 5, 1)
    problem = make_problem(C1, C2)
    res = sdp.solve(problem, G0=np.full((5, 5), 1 / 25), time_limit=30.0)
    assert res.method == "sdp" and res.lower <= res.upper
    assert list(itertools.islice(res.diagnostics["candidates"], 1)) == ["G0"]
