"""Barycenters: the objective is exactly the priced couplings, each interval is an
interval (lower checked against couplings built here), never worse than POT's own answer
from the same start, the closed-form updates are minimisers, bad input refused."""

from __future__ import annotations

import sys

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import gw_cost_dense, random_coupling

import gwlite

bary = sys.modules["gwlite.barycenters"]
seeds = st.integers(0, 2**31 - 1)


def _inputs(seed, sizes=(4, 5, 6), d=2):
    rng = np.random.default_rng(seed)
    Cs = []
    for k in sizes:
        A = rng.random((k, k))
        Cs.append(A + A.T)
    Ys = [rng.random((k, d)) for k in sizes]
    return Cs, Ys, rng


def _fgw_dense(Y, Ys, C, Cs, T, alpha):
    M = ot.dist(Y, Ys) if Y is not None else np.zeros(T.shape)
    return (1 - alpha) * float(np.sum(M * T)) + alpha * gw_cost_dense(C, Cs, T)


@settings(max_examples=12, deadline=None)
@given(seeds, st.sampled_from([None, 0.3, 0.7]), st.integers(2, 5))
def test_objective_is_the_priced_couplings_and_intervals_hold(seed, alpha, n):
    Cs, Ys, rng = _inputs(seed)
    features = None if alpha is None else Ys
    lambdas = rng.random(len(Cs))
    lambdas /= lambdas.sum()
    res = gwlite.barycenter(
        Cs, n, lambdas=lambdas, Ys=features, alpha=alpha, max_iter=5, progress=False, seed=seed
    )
    a = 1.0 if alpha is None else alpha
    assert res.C.shape == (n, n) and len(res.couplings) == len(Cs)
    costs = []
    for s, T in enumerate(res.couplings):
        # a coupling of p and ps[s] (uniform here)
        assert np.allclose(T.sum(1), res.p) and np.allclose(T.sum(0), 1 / len(Cs[s]))
        Ys_s = None if alpha is None else Ys[s]
        costs.append(_fgw_dense(res.Y, Ys_s, res.C, Cs[s], T, a))
        assert res.costs[s] == pytest.approx(costs[-1], rel=1e-9, abs=1e-12)
        # the lower end is a bound: below every coupling built here
        for S in (np.outer(res.p, np.full(len(Cs[s]), 1 / len(Cs[s]))), T):
            assert res.lowers[s] <= _fgw_dense(res.Y, Ys_s, res.C, Cs[s], S, a) + 1e-10
        S = random_coupling(rng, res.p, np.full(len(Cs[s]), 1 / len(Cs[s])))
        assert res.lowers[s] <= _fgw_dense(res.Y, Ys_s, res.C, Cs[s], S, a) + 1e-10
    assert res.objective == pytest.approx(float(lambdas @ costs), rel=1e-9, abs=1e-12)
    assert all(lo <= up for lo, up in res.intervals)
    assert all(b <= a_ + 1e-12 for a_, b in zip(res.history, res.history[1:]))  # descent


def _pot_objective(seed, alpha, n, Cs, Ys, max_iter=100):
    lam = [1 / len(Cs)] * len(Cs)
    if alpha is None:
        C, log = ot.gromov.gromov_barycenters(
            n, Cs, lambdas=lam, max_iter=max_iter, log=True, random_state=seed
        )
        return sum(l_ * gw_cost_dense(C, Cs[s], log["T"][s]) for s, l_ in enumerate(lam))
    X, C, log = ot.gromov.fgw_barycenters(
        n, Ys, Cs, lambdas=lam, alpha=alpha, max_iter=max_iter, log=True, random_state=seed
    )
    return sum(l_ * _fgw_dense(X, Ys[s], C, Cs[s], log["T"][s], alpha) for s, l_ in enumerate(lam))


@pytest.mark.parametrize("alpha", [None, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_worse_than_pots_barycenter_from_the_same_seed(seed, alpha):
    Cs, Ys, _ = _inputs(seed, sizes=(6, 7, 8))
    res = gwlite.barycenter(
        Cs, 5, Ys=None if alpha is None else Ys, alpha=alpha, seed=seed, progress=False
    )
    assert res.objective <= _pot_objective(seed, alpha, 5, Cs, Ys) + 1e-12


@settings(max_examples=15, deadline=None)
@given(seeds)
def test_closed_form_updates_minimise_their_block(seed):
    """With the couplings fixed, no perturbation of C or Y lowers the objective."""
    Cs, Ys, rng = _inputs(seed)
    inp = bary._check_inputs(Cs, 4, None, None, None, Ys, 0.5)
    Ts = [random_coupling(rng, inp.p, q) for q in inp.ps]
    C, Y = bary._update_structure(inp, Ts), bary._update_features(inp, Ts)
    best = float(inp.lambdas @ bary._costs(inp, C, Y, Ts))
    for _ in range(5):
        dC = rng.normal(size=C.shape) * 0.05
        dY = rng.normal(size=Y.shape) * 0.05
        for C2, Y2 in ((C + dC, Y), (C, Y + dY)):
            assert float(inp.lambdas @ bary._costs(inp, C2, Y2, Ts)) >= best - 1e-12


def test_identical_inputs_give_a_zero_objective():
    C = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    res = gwlite.barycenter([C, C[::-1, ::-1]], 3, progress=False, n_init=2)
    assert res.objective == pytest.approx(0.0, abs=1e-12)
    assert res.lowers == pytest.approx((0.0, 0.0), abs=1e-12)


def test_several_initialisations_keep_the_best():
    Cs, Ys, _ = _inputs(3, sizes=(6, 7, 8))
    res = gwlite.barycenter(Cs, 4, n_init=4, max_iter=10, progress=False)
    assert len(res.diagnostics["objectives"]) == 4
    assert res.objective == pytest.approx(min(res.diagnostics["objectives"]))


def test_time_limit_stops_between_steps():
    Cs, _, _ = _inputs(4, sizes=(10, 12))
    res = gwlite.barycenter(Cs, 8, n_init=5, time_limit=1e-3, progress=False)
    assert len(res.diagnostics["objectives"]) == 1  # only the first start ran
    assert res.diagnostics["stop_reason"] == "time_limit"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(Cs=[]), "non-empty"),
        (dict(Cs=np.eye(3)), "list"),
        (dict(n=0), "n must"),
        (dict(lambdas=[0.5, 0.6]), "lambdas"),
        (dict(lambdas=[1.0]), "lambdas"),
        (dict(alpha=0.5), "Ys"),
        (dict(Ys=[np.ones((3, 2))], alpha=0.5), "Ys has"),
        (dict(Ys=[np.ones((3, 2)), np.ones((4, 2))], alpha=2.0), "alpha"),
        (dict(Ys=[np.ones((3, 2)), np.ones((4, 3))]), "feature columns"),
        (dict(Ys=[np.ones((2, 2)), np.ones((4, 2))]), "shape"),
        (dict(Ys=[np.full((3, 2), np.nan), np.ones((4, 2))]), "non-finite"),
        (dict(loss_fun="abs_loss"), "square_loss"),
        (dict(method="exact"), "method"),
        (dict(max_iter=0), "max_iter"),
        (dict(time_limit=-1.0), "time_limit"),
        (dict(Cs=[np.ones((3, 3)), np.full((4, 4), np.inf)]), "non-finite"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, match):
    args = dict(Cs=[np.ones((3, 3)), np.ones((4, 4))], n=3)
    args.update(kwargs)
    with pytest.raises(gwlite.GWInputError, match=match):
        gwlite.barycenter(args.pop("Cs"), args.pop("n"), progress=False, **args)


def test_batched_coupling_step_keeps_the_contract():
    Cs, Ys, _ = _inputs(5, sizes=(5, 6))
    res = gwlite.barycenter(
        Cs, 4, Ys=Ys, alpha=0.5, method="proximal", max_iter=3, progress=False, seed=5
    )
    assert res.objective <= _pot_objective(5, 0.5, 4, Cs, Ys, max_iter=3) + 1e-12
    costs = [_fgw_dense(res.Y, Ys[s], res.C, Cs[s], T, 0.5) for s, T in enumerate(res.couplings)]
    assert res.objective == pytest.approx(float(np.mean(costs)), rel=1e-9)
