"""Fused GW: POT's convention, every bound tested as a bound (brute force, couplings built
here), the alpha limits, every method's interval, the input contract."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import gw_cost_dense, permutation_matrix, random_coupling
from strategies import problems

import gwlite
from gwlite.fused_bounds import FUSED_LOWER_BOUNDS, fused_lower, make_fused_problem

LOSSES = ["square_loss", "abs_loss"]
seeds = st.integers(0, 2**31 - 1)
alphas = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0, 1)


def _w(n, w):
    return np.full(n, 1.0 / n) if w is None else w


def fgw_dense(M, C1, C2, T, alpha, loss_fun="square_loss"):
    """(1 - alpha) <M, T> + alpha sum_ijkl L T T with the full tensor: obviously right."""
    return (1 - alpha) * float(np.sum(M * T)) + alpha * gw_cost_dense(C1, C2, T, loss_fun)


def pot_fgw_of_plan(M, C1, C2, T, alpha):
    """POT's own pricing of a fixed plan (the loss its fused_gromov_wasserstein2 reports)."""
    p, q = T.sum(1), T.sum(0)
    constC, hC1, hC2 = ot.gromov.init_matrix(C1, C2, p, q, "square_loss")
    return (1 - alpha) * float(np.sum(M * T)) + alpha * float(ot.gromov.gwloss(constC, hC1, hC2, T))


def _tol(M, C1, C2, loss_fun):
    r = 2 if loss_fun == "square_loss" else 1
    scale = max(1.0, np.abs(M).max(), np.abs(C1).max() ** r, np.abs(C2).max() ** r)
    return 1e-9 * scale


def _M(rng, n, m):
    return rng.random((n, m)) * rng.choice([0.1, 1.0, 5.0])


def _couplings(M, C1, C2, p, q, rng):
    """Every coupling built here: product, random, the LP plan of M, POT's CG plans."""
    yield np.outer(p, q)
    for _ in range(3):
        yield random_coupling(rng, p, q)
    yield ot.emd(p, q, M)
    if np.allclose(C1, C1.T) and np.allclose(C2, C2.T):
        yield ot.gromov.fused_gromov_wasserstein(M, C1, C2, p, q, alpha=0.5)


# ---------------------------------------------------------------- POT's convention
@settings(max_examples=40, deadline=None)
@given(problems(max_n=6), alphas, seeds)
def test_fgw_cost_is_pots_value_of_the_same_plan(inst, alpha, seed):
    C1, C2, p, q = inst
    rng = np.random.default_rng(seed)
    p, q = _w(len(C1), p), _w(len(C2), q)
    M = _M(rng, len(C1), len(C2))
    T = random_coupling(rng, p, q)
    ours = float(gwlite.fgw_cost(M, C1, C2, T, alpha))
    assert ours == pytest.approx(pot_fgw_of_plan(M, C1, C2, T, alpha), rel=1e-9, abs=1e-9)
    assert ours == pytest.approx(fgw_dense(M, C1, C2, T, alpha), rel=1e-9, abs=1e-9)


def test_cg_reports_pots_value_of_its_plan():
    rng = np.random.default_rng(3)
    for n, m in [(5, 7), (8, 8)]:
        C1, C2 = (gwlite.families.generate("euclidean", k, s)[0] for k, s in ((n, 1), (m, 2)))
        M = _M(rng, n, m)
        res = gwlite.fused_gromov_wasserstein(M, C1, C2, alpha=0.4, method="cg")
        T = np.asarray(res.coupling)
        assert res.upper == pytest.approx(pot_fgw_of_plan(M, C1, C2, T, 0.4), rel=1e-9)
        pot = ot.gromov.fused_gromov_wasserstein2(M, C1, C2, alpha=0.4)
        assert res.upper == pytest.approx(float(pot), rel=1e-6)


# ---------------------------------------------------------------- bounds as bounds
@settings(max_examples=50, deadline=None)
@given(problems(max_n=6), alphas, st.sampled_from(LOSSES), seeds)
def test_lower_bounds_below_cost_of_every_coupling(inst, alpha, loss_fun, seed):
    C1, C2, p, q = inst
    rng = np.random.default_rng(seed)
    p, q = _w(len(C1), p), _w(len(C2), q)
    M = _M(rng, len(C1), len(C2))
    fp = make_fused_problem(M, C1, C2, p, q, alpha, loss_fun)
    lows = {kind: fused_lower(fp, kind).value for kind in FUSED_LOWER_BOUNDS}
    tol = _tol(M, C1, C2, loss_fun)
    for T in _couplings(M, C1, C2, p, q, rng):
        cost = fgw_dense(M, C1, C2, T, alpha, loss_fun)
        for kind, low in lows.items():
            assert low <= cost + tol, (kind, low, cost)


def _brute_force(M, C1, C2, alpha, loss_fun):
    """Minimum of the fused cost over all permutation couplings (uniform, n == m)."""
    n = len(C1)
    costs = [
        fgw_dense(M, C1, C2, permutation_matrix(np.asarray(perm)), alpha, loss_fun)
        for perm in itertools.permutations(range(n))
    ]
    return min(costs)


@settings(max_examples=30, deadline=None)
@given(problems(min_n=2, max_n=5, same_size=True), alphas, st.sampled_from(LOSSES), seeds)
def test_bounds_below_every_permutation_and_exact_finds_the_best(inst, alpha, loss_fun, seed):
    C1, C2, _, _ = inst
    M = _M(np.random.default_rng(seed), len(C1), len(C2))
    best = _brute_force(M, C1, C2, alpha, loss_fun)
    tol = _tol(M, C1, C2, loss_fun)
    fp = make_fused_problem(M, C1, C2, None, None, alpha, loss_fun)
    for kind in FUSED_LOWER_BOUNDS:
        assert fused_lower(fp, kind).value <= best + tol, kind
    res = gwlite.fused_gromov_wasserstein(M, C1, C2, alpha=alpha, method="exact", loss_fun=loss_fun)
    assert res.upper == pytest.approx(best, rel=1e-9, abs=tol)
    assert res.lower <= best + tol
    if res.certified:  # then no coupling at all may beat it
        for T in _couplings(M, C1, C2, fp.gw.p, fp.gw.q, np.random.default_rng(seed)):
            assert fgw_dense(M, C1, C2, T, alpha, loss_fun) >= res.lower - tol


@settings(max_examples=30, deadline=None)
@given(problems(max_n=6), alphas, seeds)
def test_fused_tlb_dominates_the_split_bound(inst, alpha, seed):
    C1, C2, p, q = inst
    M = _M(np.random.default_rng(seed), len(C1), len(C2))
    fp = make_fused_problem(M, C1, C2, p, q, alpha)
    split = (1 - alpha) * ot.emd2(fp.gw.p, fp.gw.q, M) + alpha * gwlite.lower_bound(
        C1, C2, p, q, lower="tlb"
    )
    assert fused_lower(fp, "tlb").value >= split - _tol(M, C1, C2, "square_loss")


# ---------------------------------------------------------------- every method
METHODS = ["auto", "proximal", "cg", "entropic", "exact", "sdp"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.8, 1.0])
def test_every_method_reports_a_valid_interval(method, alpha):
    rng = np.random.default_rng(11)
    n = 5
    C1, C2 = rng.random((n, n)), rng.random((n, n))
    C1, C2 = C1 + C1.T, C2 + C2.T
    M = _M(rng, n, n)
    best = _brute_force(M, C1, C2, alpha, "square_loss")
    res = gwlite.fused_gromov_wasserstein(M, C1, C2, alpha=alpha, method=method)
    T = np.asarray(res.coupling)
    assert res.marginal_error < 1e-6 or method == "entropic"
    assert np.allclose(T.sum(1), 1 / n) and np.allclose(T.sum(0), 1 / n)
    assert res.upper == pytest.approx(fgw_dense(M, C1, C2, T, alpha), rel=1e-9, abs=1e-12)
    assert res.lower <= res.upper
    tol = _tol(M, C1, C2, "square_loss")
    assert res.lower <= best + tol  # the best permutation is a coupling
    for S in _couplings(M, C1, C2, np.full(n, 1 / n), np.full(n, 1 / n), rng):
        assert res.lower <= fgw_dense(M, C1, C2, S, alpha) + tol


# ---------------------------------------------------------------- the alpha limits
@settings(max_examples=30, deadline=None)
@given(problems(max_n=7), seeds)
def test_alpha_zero_is_linear_ot_certified(inst, seed):
    C1, C2, p, q = inst
    M = _M(np.random.default_rng(seed), len(C1), len(C2))
    res = gwlite.fused_gromov_wasserstein(M, C1, C2, p, q, alpha=0.0)
    emd = ot.emd2(_w(len(C1), p), _w(len(C2), q), M)
    assert res.certified
    assert res.upper == pytest.approx(emd, rel=1e-9, abs=1e-12)
    assert res.lower == pytest.approx(emd, rel=1e-9, abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(problems(max_n=5, symmetric_only=True))
def test_alpha_one_interval_meets_gromov_wasserstein(inst):
    C1, C2, p, q = inst
    M = np.random.default_rng(0).random((len(C1), len(C2)))  # ignored at alpha = 1
    fused = gwlite.fused_gromov_wasserstein(M, C1, C2, p, q, alpha=1.0, time_limit=5)
    gw = gwlite.gromov_wasserstein(C1, C2, p, q, time_limit=5)
    tol = _tol(M, C1, C2, "square_loss")
    assert fused.lower <= gw.upper + tol and gw.lower <= fused.upper + tol
    T = np.asarray(fused.coupling)
    assert fused.upper == pytest.approx(float(gwlite.gw_cost(C1, C2, T)), rel=1e-9, abs=1e-12)


def test_certified_on_most_small_attributed_pairs():
    """Not a performance target (measured in benchmarks/): a certificate is checked
    against brute force whenever one is given."""
    rng = np.random.default_rng(5)
    certified = 0
    for _ in range(6):
        n = 4
        Y1, Y2 = rng.random((n, 2)), rng.random((n, 2))
        C1 = gwlite.feature_cost(Y1, Y1, "euclidean")
        C2 = gwlite.feature_cost(Y2, Y2, "euclidean")
        M = gwlite.feature_cost(Y1, Y2)
        res = gwlite.fused_gromov_wasserstein(M, C1, C2, alpha=0.5)
        if res.certified:
            certified += 1
            best = _brute_force(M, C1, C2, 0.5, "square_loss")
            assert res.lower <= best + 1e-9
    assert certified >= 1


# ---------------------------------------------------------------- helpers and contract
def test_feature_cost_matches_pot_dist():
    rng = np.random.default_rng(0)
    Y1, Y2 = rng.random((4, 3)), rng.random((6, 3))
    assert np.allclose(gwlite.feature_cost(Y1, Y2), ot.dist(Y1, Y2))
    assert np.allclose(gwlite.feature_cost(Y1, Y2, "euclidean"), ot.dist(Y1, Y2, "euclidean"))


def _inputs():
    C = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    return np.ones((3, 3)), C, C


@pytest.mark.parametrize(
    "M, match",
    [
        (np.ones((3, 2)), "shape"),
        (np.ones(3), "shape"),
        (np.full((3, 3), np.nan), "non-finite"),
        (np.full((3, 3), np.inf), "non-finite"),
        (-np.ones((3, 3)), "negative"),
        (None, "None"),
        (np.ones((3, 3), dtype=complex), "complex"),
    ],
)
def test_bad_M_is_refused_clearly(M, match):
    _, C1, C2 = _inputs()
    with pytest.raises(gwlite.GWInputError, match=match):
        gwlite.fused_gromov_wasserstein(M, C1, C2)
    T = np.full((3, 3), 1 / 9)
    with pytest.raises(gwlite.GWInputError, match=match):
        gwlite.fgw_cost(M, C1, C2, T)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, np.nan, np.inf, True, "0.5", None])
def test_bad_alpha_is_refused(alpha):
    M, C1, C2 = _inputs()
    with pytest.raises(gwlite.GWInputError, match="alpha"):
        gwlite.fused_gromov_wasserstein(M, C1, C2, alpha=alpha)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from([np.nan, -1.0, np.inf]), seeds)
def test_any_bad_entry_of_M_is_named(n_bad, m, bad, seed):
    rng = np.random.default_rng(seed)
    M, C1, C2 = _inputs()
    M = rng.random((3, 3))
    M.flat[rng.choice(9, size=min(n_bad, 9), replace=False)] = bad
    with pytest.raises(gwlite.GWInputError, match="M has"):
        gwlite.fused_gromov_wasserstein(M, C1, C2, method="cg")


def test_bad_methods_and_options_are_refused():
    M, C1, C2 = _inputs()
    with pytest.raises(gwlite.GWInputError, match="unknown method"):
        gwlite.fused_gromov_wasserstein(M, C1, C2, method="sorted")
    with pytest.raises(gwlite.GWInputError, match="unknown option"):
        gwlite.fused_gromov_wasserstein(M, C1, C2, method="cg", epsilon=0.1)
    with pytest.raises(gwlite.GWInputError, match="lower"):
        gwlite.fused_gromov_wasserstein(M, C1, C2, lower="nope")
    with pytest.raises(gwlite.GWInputError, match="square_loss"):
        gwlite.fused_gromov_wasserstein(M, C1, C2, method="cg", loss_fun="abs_loss")
    with pytest.raises(gwlite.GWInputError, match="n == m"):
        gwlite.fused_gromov_wasserstein(np.ones((3, 2)), C1, C1[:2, :2], method="exact")
    with pytest.raises(gwlite.GWInputError, match="time_limit"):
        gwlite.fused_gromov_wasserstein(M, C1, C2, time_limit=-1)
    with pytest.raises(gwlite.GWInputError, match="G0"):
        gwlite.fused_gromov_wasserstein(M, C1, C2, method="cg", G0=np.ones((3, 3)))
    with pytest.raises(gwlite.GWInputError, match="Y1 and Y2"):
        gwlite.feature_cost(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(gwlite.GWInputError, match="metric"):
        gwlite.feature_cost(np.ones((2, 2)), np.ones((2, 2)), metric="nope")


# ---------------------------------------------------------------- graphs and pairs
def _attributed_graph(seed, n=5):
    import networkx as nx

    G = nx.gnp_random_graph(n, 0.6, seed=seed)
    rng = np.random.default_rng(seed)
    for v in G:
        G.nodes[v]["x"] = rng.random(2).tolist()
    return G


def test_from_networkx_reads_features_and_leaves_plain_calls_unchanged():
    G = _attributed_graph(0)
    C, p = gwlite.from_networkx(G)
    g = gwlite.from_networkx(G, node_attr="x")
    assert np.array_equal(g.C, C) and np.array_equal(g.p, p)
    assert np.array_equal(g.Y, np.array([G.nodes[v]["x"] for v in G]))
    G.nodes[0]["x"] = "red"
    with pytest.raises(gwlite.GWInputError, match="node 0"):
        gwlite.from_networkx(G, node_attr="x")
    G.nodes[0]["x"] = [0.0, 1.0]
    del G.nodes[1]["x"]
    with pytest.raises(gwlite.GWInputError, match="no attribute"):
        gwlite.from_networkx(G, node_attr="x")


def test_pairwise_with_alpha_matches_single_calls_and_knn_keeps_the_neighbours():
    graphs = [_attributed_graph(s) for s in range(7)]
    full = gwlite.pairwise(graphs, alpha=0.5, node_attr="x", method="cg", progress=False)
    spaces = [gwlite.from_networkx(G, node_attr="x") for G in graphs]
    a, b = spaces[1], spaces[4]
    one = gwlite.fused_gromov_wasserstein(
        gwlite.feature_cost(a.Y, b.Y), a.C, b.C, a.p, b.p, alpha=0.5, method="cg"
    )
    assert full.upper[1, 4] == full.upper[4, 1] == pytest.approx(one.upper, rel=1e-12)
    assert full.lower[1, 4] == pytest.approx(one.lower, rel=1e-12)
    pruned = gwlite.pairwise(spaces, alpha=0.5, knn=2, method="cg", progress=False)
    assert pruned.n_evaluated <= full.n_evaluated
    # both are intervals for the same numbers: they must overlap
    assert np.all(pruned.lower <= full.upper + 1e-12) and np.all(full.lower <= pruned.upper + 1e-12)
    with pytest.raises(gwlite.GWInputError, match="engine"):
        gwlite.pairwise(spaces, alpha=0.5, engine=2, progress=False)
    with pytest.raises(gwlite.GWInputError, match="spaces"):
        gwlite.pairwise([np.eye(3), np.eye(3)], alpha=0.5, progress=False)
    bad = spaces[:2] + [(spaces[2].C, spaces[2].p, np.full_like(spaces[2].Y, np.nan))]
    with pytest.raises(gwlite.GWInputError, match=r"spaces\[2\]"):
        gwlite.pairwise(bad, alpha=0.5, progress=False)
    with pytest.raises(gwlite.GWInputError, match="unknown option"):
        gwlite.pairwise(spaces, alpha=0.5, method="cg", epsilon=0.1, progress=False)


def test_float32_torch_inputs_give_a_coupling_in_torch():
    torch = pytest.importorskip("torch")
    C = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    M = torch.rand(3, 3, generator=torch.Generator().manual_seed(0))
    res = gwlite.fused_gromov_wasserstein(M, C, C, alpha=0.3, method="cg")
    assert isinstance(res.coupling, torch.Tensor) and res.coupling.dtype == torch.float32
    T = res.coupling.double().numpy()
    expected = fgw_dense(M.double().numpy(), C.double().numpy(), C.double().numpy(), T, 0.3)
    assert res.upper == pytest.approx(expected, rel=1e-6)


@settings(max_examples=10, deadline=None)
@given(problems(min_n=2, max_n=4, symmetric_only=True), alphas, seeds)
def test_sdp_lower_is_below_every_coupling_built_here(inst, alpha, seed):
    C1, C2, p, q = inst
    rng = np.random.default_rng(seed)
    p, q = _w(len(C1), p), _w(len(C2), q)
    M = _M(rng, len(C1), len(C2))
    res = gwlite.fused_gromov_wasserstein(M, C1, C2, p, q, alpha=alpha, method="sdp")
    tol = _tol(M, C1, C2, "square_loss")
    assert res.lower <= res.upper
    for T in _couplings(M, C1, C2, p, q, rng):
        assert res.lower <= fgw_dense(M, C1, C2, T, alpha) + tol
