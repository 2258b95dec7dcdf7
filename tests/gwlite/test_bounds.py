"""Every bound tested as a bound: against the cost of feasible couplings and brute force."""

import numpy as np
import ot
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference import (
    best_permutation,
    centred_definiteness,
    gw_cost_dense,
    permutation_matrix,
    random_coupling,
)
from strategies import matrices, problems

import gwlite
from gwlite.families import CND_FAMILIES, PSD_FAMILIES, generate

LOSSES = ["square_loss", "abs_loss"]
KINDS = list(gwlite.LOWER_BOUNDS)
seeds = st.integers(0, 2**31 - 1)


def _w(n, w):
    return np.full(n, 1.0 / n) if w is None else w


def _tol(C1, C2, loss_fun):
    scale = max(1.0, np.abs(C1).max(), np.abs(C2).max())
    return 1e-10 * scale ** (2 if loss_fun == "square_loss" else 1)


def _feasible_couplings(C1, C2, p, q, rng):
    """Every coupling we can build: sorted, POT CG, random couplings, product."""
    yield gwlite.sorted_coupling(C1, C2, p, q)
    yield np.outer(p, q)
    yield random_coupling(rng, p, q)
    if np.allclose(C1, C1.T) and np.allclose(C2, C2.T):
        yield ot.gromov.gromov_wasserstein(C1, C2, p, q)


@settings(max_examples=60, deadline=None)
@given(problems(max_n=6), st.sampled_from(LOSSES), seeds)
def test_lower_bounds_below_cost_of_every_coupling(inst, loss_fun, seed):
    C1, C2, p, q = inst
    p, q = _w(len(C1), p), _w(len(C2), q)
    lows = {k: gwlite.lower_bound(C1, C2, p, q, loss_fun=loss_fun, lower=k) for k in KINDS}
    tol = _tol(C1, C2, loss_fun)
    for T in _feasible_couplings(C1, C2, p, q, np.random.default_rng(seed)):
        cost = gw_cost_dense(C1, C2, T, loss_fun)
        for kind, low in lows.items():
            assert low <= cost + tol, (kind, low, cost)


@settings(max_examples=40, deadline=None)
@given(problems(min_n=2, max_n=6, same_size=True), st.sampled_from(LOSSES))
def test_lower_bounds_below_every_permutation(inst, loss_fun):
    C1, C2, _, _ = inst
    best, _ = best_permutation(C1, C2, loss_fun)
    for kind in KINDS:
        assert gwlite.lower_bound(C1, C2, loss_fun=loss_fun, lower=kind) <= best + _tol(
            C1, C2, loss_fun
        )


@settings(max_examples=60, deadline=None)
@given(problems(max_n=7), st.sampled_from(LOSSES))
def test_tlb_dominates_the_other_lower_bounds(inst, loss_fun):
    C1, C2, p, q = inst
    tlb = gwlite.lower_bound(C1, C2, p, q, loss_fun=loss_fun, lower="tlb")
    for kind in ("mean_row", "flb", "slb"):
        low = gwlite.lower_bound(C1, C2, p, q, loss_fun=loss_fun, lower=kind)
        assert low <= tlb + _tol(C1, C2, loss_fun), kind


@settings(max_examples=60, deadline=None)
@given(problems(max_n=7), st.sampled_from(LOSSES))
def test_upper_bound_is_the_cost_of_the_sorted_coupling(inst, loss_fun):
    C1, C2, p, q = inst
    res = gwlite.gromov_wasserstein(C1, C2, p, q, loss_fun=loss_fun, method="sorted")
    T = res.coupling
    assert T.min() >= 0
    assert res.marginal_error <= 1e-9
    assert res.upper == pytest.approx(gw_cost_dense(C1, C2, T, loss_fun), rel=1e-10, abs=1e-12)
    assert res.value <= res.upper + _tol(C1, C2, loss_fun)
    assert res.lower == min(res.value, res.upper)


def _definite_pair(draw_family, n, seed1, seed2):
    C1, _ = generate(draw_family, n, seed1)
    C2, _ = generate(draw_family, n, seed2)
    return C1, C2


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(PSD_FAMILIES + CND_FAMILIES), st.integers(2, 7), seeds, seeds)
def test_bounds_bracket_gw_on_definite_pairs(family, n, s1, s2):
    # both centred matrices PSD (or both NSD): the best permutation is GW (square loss)
    C1, C2 = _definite_pair(family, n, s1, s2)
    kinds = {centred_definiteness(C1), centred_definiteness(C2)}
    assume(kinds in ({"psd"}, {"nsd"}))
    gw, _ = best_permutation(C1, C2)
    res = gwlite.gromov_wasserstein(C1, C2, lower="tlb", method="sorted")
    tol = _tol(C1, C2, "square_loss")
    assert res.value - tol <= res.lower  # tlb dominates the closed form
    assert res.lower <= gw + tol
    assert gw <= res.upper + tol


def _relabel(C, w, perm):
    return C[np.ix_(perm, perm)], None if w is None else w[perm]


@settings(max_examples=50, deadline=None)
@given(problems(max_n=7), st.sampled_from(LOSSES), seeds)
def test_all_bounds_invariant_to_relabelling(inst, loss_fun, seed):
    C1, C2, p, q = inst
    rng = np.random.default_rng(seed)
    D1, p2 = _relabel(C1, p, rng.permutation(len(C1)))
    D2, q2 = _relabel(C2, q, rng.permutation(len(C2)))
    tol = _tol(C1, C2, loss_fun)
    for kind in KINDS:
        a = gwlite.lower_bound(C1, C2, p, q, loss_fun=loss_fun, lower=kind)
        b = gwlite.lower_bound(D1, D2, p2, q2, loss_fun=loss_fun, lower=kind)
        assert a == pytest.approx(b, abs=tol), kind
    up1 = gwlite.sorted_upper_bound(C1, C2, p, q, loss_fun=loss_fun)
    up2 = gwlite.sorted_upper_bound(D1, D2, p2, q2, loss_fun=loss_fun)
    assert up1 == pytest.approx(up2, abs=tol)


@settings(max_examples=40, deadline=None)
@given(problems(max_n=7), st.sampled_from(LOSSES))
def test_bounds_symmetric_in_their_arguments(inst, loss_fun):
    C1, C2, p, q = inst
    tol = _tol(C1, C2, loss_fun)
    for kind in KINDS:
        a = gwlite.lower_bound(C1, C2, p, q, loss_fun=loss_fun, lower=kind)
        b = gwlite.lower_bound(C2, C1, q, p, loss_fun=loss_fun, lower=kind)
        assert a == pytest.approx(b, abs=tol), kind
    a = gwlite.sorted_upper_bound(C1, C2, p, q, loss_fun=loss_fun)
    b = gwlite.sorted_upper_bound(C2, C1, q, p, loss_fun=loss_fun)
    assert a == pytest.approx(b, abs=tol)


@settings(max_examples=50, deadline=None)
@given(matrices(max_n=8), st.sampled_from(LOSSES), seeds)
def test_lower_bounds_zero_on_isomorphic_inputs(C, loss_fun, seed):
    perm = np.random.default_rng(seed).permutation(len(C))
    D = C[np.ix_(perm, perm)]
    for kind in KINDS:
        assert abs(gwlite.lower_bound(C, D, loss_fun=loss_fun, lower=kind)) <= _tol(C, D, loss_fun)


def test_sorted_closed_form_is_paper_sum_over_n_squared():
    # InfiGFusion's sum_i |f_C(i) - f_D(i)| over sorted row sums equals n^2 W_1
    rng = np.random.default_rng(0)
    n = 9
    C, D = rng.random((n, n)), rng.random((n, n))
    C, D = C + C.T, D + D.T
    paper = np.abs(np.sort(C.sum(1)) - np.sort(D.sum(1))).sum()
    value = gwlite.lower_bound(C, D, loss_fun="abs_loss")
    assert n**2 * value == pytest.approx(paper, rel=1e-12)


def test_regular_graphs_have_zero_mean_row_bound_but_positive_gw():
    C1, _ = generate("regular", 8, seed=0)
    C2, _ = generate("regular", 8, seed=3)
    assert gwlite.lower_bound(C1, C2) == pytest.approx(0.0, abs=1e-15)
    res = gwlite.gromov_wasserstein(C1, C2, lower="tlb", method="sorted")
    assert res.lower <= best_permutation(C1, C2)[0] + 1e-12
    assert res.upper > 0


@settings(max_examples=30, deadline=None)
@given(problems(max_n=7))
def test_square_loss_gap_identity(inst):
    C1, C2, p, q = inst
    p, q = _w(len(C1), p), _w(len(C2), q)
    res = gwlite.gromov_wasserstein(C1, C2, p, q, method="sorted")
    d, T = res.diagnostics, res.coupling
    s1, s2 = C1 @ p, C2 @ q
    var1 = np.einsum("i,k,ik->", p, p, (C1 - s1[:, None]) ** 2)
    var2 = np.einsum("j,l,jl->", q, q, (C2 - s2[:, None]) ** 2)
    cov = np.einsum("ik,jl,ij,kl->", C1 - s1[:, None], C2 - s2[:, None], T, T)
    upper = gw_cost_dense(C1, C2, T)
    scale = max(1.0, np.abs(C1).max(), np.abs(C2).max()) ** 2
    assert d["var_C1"] == pytest.approx(var1, abs=1e-10 * scale)
    assert d["var_C2"] == pytest.approx(var2, abs=1e-10 * scale)
    assert d["cov"] == pytest.approx(cov, abs=1e-10 * scale)
    # upper = W_2^2 + V_C + V_D - 2 cov
    assert upper == pytest.approx(res.value + var1 + var2 - 2 * cov, abs=1e-10 * scale)
    assert upper - res.value <= (np.sqrt(var1) + np.sqrt(var2)) ** 2 + 1e-10 * scale


@settings(max_examples=30, deadline=None)
@given(problems(max_n=7), seeds)
def test_abs_loss_gap_bound(inst, seed):
    C1, C2, p, q = inst
    p, q = _w(len(C1), p), _w(len(C2), q)
    res = gwlite.gromov_wasserstein(C1, C2, p, q, loss_fun="abs_loss", method="sorted")
    s1, s2 = C1 @ p, C2 @ q
    delta1 = np.einsum("i,k,ik->", p, p, np.abs(C1 - s1[:, None]))
    delta2 = np.einsum("j,l,jl->", q, q, np.abs(C2 - s2[:, None]))
    scale = max(1.0, np.abs(C1).max(), np.abs(C2).max())
    assert res.diagnostics["delta_C1"] == pytest.approx(delta1, abs=1e-12 * scale)
    assert res.upper <= res.value + delta1 + delta2 + 1e-10 * scale
    assert res.upper - res.diagnostics["feature_cost"] == pytest.approx(
        res.diagnostics["pos_neg_gap"], abs=1e-10 * scale
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), seeds)
def test_abs_loss_permutation_gap_identity(n, seed):
    # uniform weights, n = m, tie-free features: the sorted coupling is a permutation
    rng = np.random.default_rng(seed)
    C1, C2 = rng.random((n, n)), rng.random((n, n))
    res = gwlite.gromov_wasserstein(C1, C2, loss_fun="abs_loss", method="sorted")
    assert res.diagnostics["coupling_is_permutation"]
    sigma = np.argmax(res.coupling, axis=1)
    R = C1 - C2[np.ix_(sigma, sigma)]
    P, N = np.clip(R, 0, None).sum(1), np.clip(-R, 0, None).sum(1)
    # upper - value = (2 / n^2) sum_i min(P_i, N_i)
    assert res.upper - res.value == pytest.approx(2 / n**2 * np.minimum(P, N).sum(), abs=1e-10)
    assert res.upper == pytest.approx(np.abs(R).mean(), abs=1e-12)


def test_batched_lower_bounds_equal_loop():
    rng = np.random.default_rng(2)
    C1, C2 = rng.random((3, 6, 6)), rng.random((3, 5, 5))
    for kind in KINDS:
        got = gwlite.lower_bound(C1, C2, lower=kind)
        assert got.shape == (3,)
        for b in range(3):
            assert got[b] == pytest.approx(gwlite.lower_bound(C1[b], C2[b], lower=kind), abs=1e-14)


def test_tlb_certificate_survives_an_early_stop(monkeypatch):
    # a truncated network simplex must still give a valid (smaller) bound
    import gwlite.bounds as bounds

    C1, _ = generate("euclidean", 12, seed=1)
    C2, _ = generate("euclidean", 12, seed=2)
    full = gwlite.lower_bound(C1, C2, lower="tlb")
    real_emd = ot.emd

    def truncated(*args, **kwargs):
        kwargs["numItermax"] = 3
        return real_emd(*args, **kwargs)

    monkeypatch.setattr(ot, "emd", truncated)
    with pytest.warns(UserWarning):
        early = bounds.lower_bound(C1, C2, lower="tlb")
    assert early <= full + 1e-12
    assert np.isfinite(early)
    assert early <= gwlite.sorted_upper_bound(C1, C2)


@pytest.mark.parametrize("loss_fun", LOSSES)
def test_sorted_coupling_of_identical_graphs_is_an_isomorphism(loss_fun):
    C, _ = generate("euclidean", 10, seed=4)
    perm = np.random.default_rng(0).permutation(10)
    res = gwlite.gromov_wasserstein(C, C[np.ix_(perm, perm)], loss_fun=loss_fun, method="sorted")
    assert res.certified
    assert res.upper == 0.0  # the coupling found is an isomorphism
    assert res.lower == res.upper  # a closed form above upper by round-off is clamped
    np.testing.assert_allclose(res.coupling @ np.ones(10), np.full(10, 0.1))


def test_permutation_matrix_reference_consistency():
    # guards the brute-force helpers the tests rely on
    C1, C2 = np.array([[0.0, 1.0], [1.0, 0.0]]), np.eye(2)
    best, perm = best_permutation(C1, C2)
    assert best == 1.0
    assert gw_cost_dense(C1, C2, permutation_matrix(perm)) == 1.0
    assert gw_cost_dense(C1, C2, np.full((2, 2), 0.25)) == 0.5


@settings(max_examples=50, deadline=None)
@given(matrices(max_n=9, symmetric_only=True), st.sampled_from(LOSSES), seeds)
def test_refined_sorted_coupling_finds_isomorphisms(C, loss_fun, seed):
    # when the label-free keys separate every node, the key matching is forced to be
    # the isomorphism (any isomorphism preserves every key)
    perm = np.random.default_rng(seed).permutation(len(C))
    res = gwlite.gromov_wasserstein(C, C[np.ix_(perm, perm)], loss_fun=loss_fun, method="sorted")
    if res.diagnostics["coupling_is_permutation"]:
        assert res.upper <= _tol(C, C, loss_fun)
        assert res.certified


def test_tie_spreading_on_vertex_transitive_graphs():
    # K2 vs K2: every label-free coupling is the product coupling (the swap is an
    # automorphism of each side), whose cost is 1/2
    K2 = np.array([[0.0, 1.0], [1.0, 0.0]])
    res = gwlite.gromov_wasserstein(K2, K2, method="sorted")
    np.testing.assert_allclose(res.coupling, np.full((2, 2), 0.25))
    assert res.upper == pytest.approx(0.5)
    assert res.lower == 0.0 and not res.certified


def test_kind_is_a_deprecated_alias_of_lower():
    C1, C2 = np.array([[0.0, 1.0], [1.0, 0.0]]), np.eye(2)
    with pytest.warns(FutureWarning, match="lower="):
        old = gwlite.lower_bound(C1, C2, kind="tlb")
    assert old == gwlite.lower_bound(C1, C2, lower="tlb")


def test_one_name_for_the_lower_bound_choice():
    import inspect

    from gwlite.solvers import SOLVERS

    assert "lower" in inspect.signature(gwlite.lower_bound).parameters
    for method, solve in SOLVERS.items():
        assert "lower" in inspect.signature(solve).parameters, method
