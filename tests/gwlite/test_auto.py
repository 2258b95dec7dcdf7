"""method="auto" (the default): bounds that stay bounds, certified isomorphisms, an
honoured time limit, and a record of which method produced what."""

import json
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import best_permutation, gw_cost_dense, random_coupling
from strategies import problems

import gwlite
from gwlite.errors import GWInputError
from gwlite.families import FAMILIES, generate
from gwlite.result import GWResult
from gwlite.solvers import auto

QUICK = {"time_limit": 3.0}


def _weights(n, w):
    return np.full(n, 1 / n) if w is None else np.asarray(w)


def test_auto_is_the_default_method():
    C1, _ = generate("euclidean", 6, seed=0)
    C2, _ = generate("euclidean", 5, seed=1)
    res = gwlite.gromov_wasserstein(C1, C2, **QUICK)
    assert res.method == "auto"
    d = res.diagnostics
    assert d["upper_by"] in ("sorted", "proximal", "exact", "sdp")
    assert d["lower_by"] in ("mean_row", "tlb", "sdp") or d["lower_by"].startswith("exact")
    assert [s["stage"] for s in d["stages"]][:2] == ["sorted", "tlb"]
    assert all(s["time_s"] >= 0 for s in d["stages"])
    assert d["value_sorted"] == pytest.approx(gwlite.lower_bound(C1, C2))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_n=6), st.sampled_from(["square_loss", "abs_loss"]), st.integers(0, 99))
def test_lower_never_exceeds_a_coupling_we_can_build(instance, loss_fun, seed):
    C1, C2, p, q = instance
    res = gwlite.gromov_wasserstein(C1, C2, p, q, loss_fun=loss_fun, **QUICK)
    pp, qq = _weights(len(C1), p), _weights(len(C2), q)
    T = np.asarray(res.coupling)
    np.testing.assert_allclose(T.sum(1), pp, atol=1e-9)
    np.testing.assert_allclose(T.sum(0), qq, atol=1e-9)
    assert res.value == res.upper
    assert res.upper == pytest.approx(gw_cost_dense(C1, C2, T, loss_fun), rel=1e-9, abs=1e-12)
    rng = np.random.default_rng(seed)
    scale = max(1.0, np.abs(C1).max(), np.abs(C2).max()) ** 2
    others = [random_coupling(rng, pp, qq) for _ in range(4)] + [np.outer(pp, qq)]
    for other in others:
        assert res.lower <= gw_cost_dense(C1, C2, other, loss_fun) + 1e-10 * scale
    assert res.lower <= res.upper


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(min_n=2, max_n=6, same_size=True))
def test_lower_below_the_best_permutation(instance):
    C1, C2, _, _ = instance
    res = gwlite.gromov_wasserstein(C1, C2, **QUICK)
    best, _ = best_permutation(C1, C2)
    scale = max(1.0, np.abs(C1).max(), np.abs(C2).max()) ** 2
    assert res.lower <= best + 1e-10 * scale
    # exact runs for n = m <= 32 with uniform weights: the plan is at least as good
    assert res.upper <= best + 1e-10 * scale


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FAMILIES)), st.integers(4, 14), st.integers(0, 2**31 - 1))
def test_isomorphic_inputs_are_certified(family, n, seed):
    C, _ = generate(family, n, seed=seed % 1000)
    perm = np.random.default_rng(seed).permutation(len(C))
    res = gwlite.gromov_wasserstein(C, C[np.ix_(perm, perm)], **QUICK)
    assert res.certified, res.diagnostics["stages"]
    scale = max(1.0, np.abs(C).max()) ** 2
    assert res.upper <= 1e-10 * scale


def test_isomorphic_real_graph_is_certified():
    import networkx as nx

    A = np.asarray(nx.floyd_warshall_numpy(nx.karate_club_graph()))
    perm = np.random.default_rng(0).permutation(len(A))
    res = gwlite.gromov_wasserstein(A, A[np.ix_(perm, perm)], time_limit=8.0)
    assert res.certified and res.upper == 0.0


def test_certified_exact_stops_early():
    # centred-PSD families: exact certifies the permutation optimum
    C1, _ = generate("gram", 6, seed=1)
    C2, _ = generate("gram", 6, seed=2)
    res = gwlite.gromov_wasserstein(C1, C2, time_limit=5.0)
    if res.certified:
        assert res.diagnostics["stop_reason"] == "certified"
        assert res.lower == res.upper
        assert res.diagnostics["lower_by"] == "exact"


def test_time_limit_is_honoured():
    rng = np.random.default_rng(0)
    X, Y = rng.random((350, 4)), rng.random((330, 4))
    C1 = np.linalg.norm(X[:, None] - X[None], axis=-1)
    C2 = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
    gwlite.gromov_wasserstein(C1[:20, :20], C2[:20, :20], time_limit=0.5)  # imports
    limit = 1.5
    start = time.perf_counter()
    res = gwlite.gromov_wasserstein(C1, C2, time_limit=limit)
    elapsed = time.perf_counter() - start
    assert elapsed <= 1.1 * limit + 0.4  # 10% target plus shared-CI scheduling noise
    assert res.diagnostics["time_limit"] == limit
    assert res.lower <= res.upper


def test_torch_inputs_give_tensors():
    C1, _ = generate("euclidean", 7, seed=2)
    C2, _ = generate("euclidean", 6, seed=3)
    res = gwlite.gromov_wasserstein(torch.tensor(C1), torch.tensor(C2), **QUICK)
    assert torch.is_tensor(res.coupling)
    assert res.upper == pytest.approx(gw_cost_dense(C1, C2, res.coupling.numpy()), rel=1e-9)
    # the stages before the (time-limited) SDP give the same bounds on both backends
    assert res.lower >= gwlite.lower_bound(C1, C2, lower="tlb") - 1e-12
    assert res.lower <= res.upper


def test_unequal_weighted_graphs_stay_within_budget():
    import networkx as nx

    A = nx.floyd_warshall_numpy(nx.florentine_families_graph())
    B = nx.floyd_warshall_numpy(nx.davis_southern_women_graph())
    deg = np.asarray([d for _, d in nx.davis_southern_women_graph().degree()], float)
    res = gwlite.gromov_wasserstein(A, B, None, deg / deg.sum(), time_limit=4.0)
    assert res.time_s <= 4.4 + 0.4
    assert res.lower >= gwlite.lower_bound(A, B, None, deg / deg.sum(), lower="tlb") - 1e-12
    assert res.upper <= gwlite.sorted_upper_bound(A, B, None, deg / deg.sum()) + 1e-12


# ------------------------------------------------------------------ the SDP stage
def _fake_sdp(calls, lower_shift):
    def solve(problem, *, lower="tlb", G0=None, time_limit=None, return_coupling=True):
        calls.append({"lower": lower, "G0": G0, "time_limit": time_limit})
        exact = gwlite.solvers.SOLVERS["exact"](problem, lower="tlb")
        return GWResult(
            value=exact.upper,
            lower=exact.upper - lower_shift,
            upper=exact.upper,
            coupling=exact.coupling,
            method="sdp",
            loss_fun=problem.loss_fun,
            converged=True,
            n_iter=1,
            marginal_error=0.0,
            certified=lower_shift == 0,
            time_s=0.0,
        )

    return solve


def test_sdp_stage_uses_an_installed_solver(monkeypatch):
    # a mixed-definiteness pair: exact cannot certify, the (fake) SDP then closes the gap
    rng = np.random.default_rng(5)
    A, B = rng.random((6, 6)), rng.normal(size=(6, 6))
    C1, C2 = (A + A.T) / 2, (B + B.T) / 2
    calls = []
    monkeypatch.setattr(auto, "_sdp", lambda backend="scs": _fake_sdp(calls, 0.0))
    res = gwlite.gromov_wasserstein(C1, C2, time_limit=5.0)
    stages = [s["stage"] for s in res.diagnostics["stages"]]
    assert stages[-2:] == ["exact", "sdp"]  # exact could not certify this pair
    assert len(calls) == 1 and calls[0]["G0"] is not None and calls[0]["time_limit"] > 0
    assert calls[0]["lower"] == "tlb"
    assert res.diagnostics["lower_by"] == "sdp" and res.certified


def test_sdp_stage_keeps_the_better_bound(monkeypatch):
    rng = np.random.default_rng(5)
    A, B = rng.random((6, 6)), rng.normal(size=(6, 6))
    C1, C2 = (A + A.T) / 2, (B + B.T) / 2
    monkeypatch.setattr(auto, "_sdp", lambda backend="scs": None)
    without = gwlite.gromov_wasserstein(C1, C2, time_limit=5.0)
    monkeypatch.setattr(auto, "_sdp", lambda backend="scs": _fake_sdp([], 1e6))  # a useless bound
    res = gwlite.gromov_wasserstein(C1, C2, time_limit=5.0)
    assert "sdp" in [s["stage"] for s in res.diagnostics["stages"]]
    assert res.lower == pytest.approx(without.lower, abs=1e-12)
    assert res.diagnostics["lower_by"] != "sdp"


def test_sdp_stage_reports_a_missing_solver(monkeypatch):
    monkeypatch.setattr(auto, "_sdp", lambda backend="scs": None)
    rng = np.random.default_rng(2)
    A, B = rng.random((5, 5)), rng.normal(size=(5, 5))
    res = gwlite.gromov_wasserstein((A + A.T) / 2, (B + B.T) / 2, time_limit=5.0)
    (stage,) = [s for s in res.diagnostics["stages"] if s["stage"] == "sdp"]
    assert "no SDP solver" in stage["skipped"]


# ------------------------------------------------------------------ options and CLI
@pytest.mark.parametrize(
    "options, message",
    [
        ({"time_limit": 0}, "time_limit"),
        ({"time_limit": -1.0}, "time_limit"),
        ({"rtol": -0.1}, "rtol"),
        ({"n_starts": 0}, "n_starts"),
        ({"lower": "best"}, "unknown lower bound"),
        ({"epsilon": 0.1}, "unknown option"),
    ],
)
def test_bad_options_are_refused(options, message):
    C, _ = generate("euclidean", 4, seed=0)
    with pytest.raises(GWInputError, match=message):
        gwlite.gromov_wasserstein(C, C, **options)


def test_lower_option_is_always_computed():
    C1, _ = generate("euclidean", 7, seed=0)
    C2, _ = generate("regular", 7, seed=1)
    res = gwlite.gromov_wasserstein(C1, C2, lower="slb", **QUICK)
    assert "lower" in [s["stage"] for s in res.diagnostics["stages"]]
    assert res.lower >= gwlite.lower_bound(C1, C2, lower="slb") - 1e-12


def test_cli_distance_defaults_to_auto(capsys):
    from gwlite.cli import main

    assert main(["distance", "builtin:florentine", "builtin:petersen", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "auto"
    assert record["lower"] <= record["upper"]
