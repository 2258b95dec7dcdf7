"""Scale: certificates, tolerances and bounds do not depend on the unit of the inputs,
and entries too large or too small to compute with are refused (or widened) up front."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import best_permutation, gw_cost_dense
from strategies import problems

import gwlite
from gwlite.families import generate
from gwlite.solvers._common import CERTIFY_RTOL


def _euclidean(n, seed):
    X = np.random.default_rng(seed).normal(size=(n, 2))
    return np.linalg.norm(X[:, None] - X[None], axis=-1)


A6, B7 = _euclidean(6, 0), _euclidean(7, 1)


@pytest.mark.parametrize("method", ["sorted", "cg", "entropic"])
@pytest.mark.parametrize("s", [1e-6, 2.0**-30, 1e-3, 1e4])
def test_small_gaps_are_not_certified_at_small_scales(method, s):
    # at entries of size 1e-6 every gap is below 1e-12: an absolute tolerance certified
    # them all, although TLB proved GW larger than the certified value
    ref = gwlite.gromov_wasserstein(A6, B7, method=method)
    res = gwlite.gromov_wasserstein(A6 * s, B7 * s, method=method)
    assert not ref.certified and not res.certified
    assert res.gap > 0
    assert res.upper == pytest.approx(ref.upper * s**2, rel=1e-9)
    tlb = gwlite.lower_bound(A6 * s, B7 * s, lower="tlb")
    assert tlb <= res.upper


def test_cg_iterates_the_same_at_every_scale():
    # POT's tol_abs is absolute: at scale 1e-5 it stopped cg after one iteration while
    # `converged` said True; gwlite runs POT on normalised matrices
    ref = gwlite.gromov_wasserstein(A6, B7, method="cg")
    for s in (1e-6, 1e-5, 1e5):
        res = gwlite.gromov_wasserstein(A6 * s, B7 * s, method="cg")
        assert res.n_iter == ref.n_iter > 1
        assert res.converged == ref.converged
        np.testing.assert_allclose(res.coupling, ref.coupling, atol=1e-12)
        assert res.diagnostics["pot_value"] == pytest.approx(ref.diagnostics["pot_value"] * s**2)


def test_entropic_default_epsilon_follows_the_scale():
    ref = gwlite.gromov_wasserstein(A6, B7, method="entropic")
    assert ref.diagnostics["epsilon"] == pytest.approx(0.1 * max(A6.max(), B7.max()) ** 2)
    for k in (-20, 12):
        s = 2.0**k
        res = gwlite.gromov_wasserstein(A6 * s, B7 * s, method="entropic")
        np.testing.assert_array_equal(res.coupling, ref.coupling)  # a power of two: exact
        assert res.upper == pytest.approx(ref.upper * s**2, rel=1e-12)
    # an explicit epsilon keeps POT's absolute meaning
    res = gwlite.gromov_wasserstein(A6, B7, method="entropic", epsilon=0.5)
    assert res.diagnostics["epsilon"] == 0.5


@settings(max_examples=40, deadline=None)
@given(
    problems(max_n=6, same_size=True),
    st.sampled_from(["square_loss", "abs_loss"]),
    st.sampled_from(list(gwlite.LOWER_BOUNDS)),
    st.integers(-40, 40),
    st.sampled_from(["sorted", "proximal"]),
)
def test_certified_and_bounds_are_scale_covariant(inst, loss_fun, lower, k, method):
    # the deterministic methods; ``auto`` spends a time budget, so where its stages end
    # (and hence its bounds) can differ from one call to the next at any scale
    C1, C2, p, q = inst
    s = 2.0**k  # exact in floating point: every decision must be the same
    kw = {"loss_fun": loss_fun, "lower": lower, "method": method}
    try:
        ref = gwlite.gromov_wasserstein(C1, C2, p, q, **kw)
    except gwlite.GWInputError as err:  # proximal's abs_loss needs <= 64 distinct values
        assert method == "proximal" and loss_fun == "abs_loss", err
        with pytest.raises(gwlite.GWInputError):
            gwlite.gromov_wasserstein(C1 * s, C2 * s, p, q, **kw)
        return
    res = gwlite.gromov_wasserstein(C1 * s, C2 * s, p, q, **kw)
    r = 2 if loss_fun == "square_loss" else 1
    assert res.certified == ref.certified
    for field in ("value", "lower", "upper"):
        assert getattr(res, field) == pytest.approx(getattr(ref, field) * s**r, rel=1e-12)
    for kind in gwlite.LOWER_BOUNDS:
        low = gwlite.lower_bound(C1 * s, C2 * s, p, q, loss_fun=loss_fun, lower=kind)
        ref_low = gwlite.lower_bound(C1, C2, p, q, loss_fun=loss_fun, lower=kind)
        assert low == pytest.approx(ref_low * s**r, rel=1e-9, abs=1e-12 * s**r), kind


def test_exact_certifies_alike_at_every_scale():
    C, _ = generate("euclidean", 6, seed=3)
    D = C[::-1, ::-1].copy()
    for s in (1.0, 1e-8, 1e8):
        res = gwlite.gromov_wasserstein(C * s, D * s, method="exact")
        assert res.certified and res.upper == 0.0
        other = gwlite.gromov_wasserstein(C * s, _euclidean(6, 9) * s, method="exact")
        gw, _ = best_permutation(C, _euclidean(6, 9))
        assert other.upper == pytest.approx(gw * s**2, rel=1e-9)


def test_tlb_is_the_same_bound_in_every_unit():
    # the network simplex used to stop early on tiny costs, weakening TLB at 1e-6
    ref = gwlite.lower_bound(A6, B7, lower="tlb")
    for s in (1e-6, 2.0**-40, 1e6):
        assert gwlite.lower_bound(A6 * s, B7 * s, lower="tlb") == pytest.approx(
            ref * s**2, rel=1e-12
        )


def test_certify_tolerance_is_relative():
    C, _ = generate("tree_metric", 5, seed=1)
    res = gwlite.gromov_wasserstein(C, C[::-1, ::-1])
    assert res.certified
    scale = np.abs(C).max() ** 2
    assert res.gap <= CERTIFY_RTOL * scale


# ---------------------------------------------------------------- range
@pytest.mark.parametrize("s", [1e154, 1e200, 1e300, 1e-150, 1e-200, 1e-300])
@pytest.mark.parametrize("method", list(gwlite.METHODS))
def test_out_of_range_float64_is_refused_before_any_work(s, method, monkeypatch):
    import ot

    def never(*args, **kwargs):
        raise AssertionError("POT was called")

    monkeypatch.setattr(ot.gromov, "gromov_wasserstein", never)
    monkeypatch.setattr(ot.gromov, "entropic_gromov_wasserstein", never)
    C, D = A6[:5, :5], B7[:5, :5]
    with pytest.raises(gwlite.GWInputError, match="too (large|small).*rescale|multiply both"):
        gwlite.gromov_wasserstein(C * s, D * s, method=method)


@pytest.mark.parametrize("s", [1e154, 1e200, 1e-200])
@pytest.mark.parametrize("kind", list(gwlite.LOWER_BOUNDS))
def test_every_lower_bound_refuses_the_same_range(s, kind):
    with pytest.raises(gwlite.GWInputError, match="too (large|small)"):
        gwlite.lower_bound(A6 * s, B7 * s, lower=kind)


@pytest.mark.parametrize("s", [1e-140, 1e-100, 1e100, 1e150])
def test_large_and_small_float64_within_range_work(s):
    for method in ("sorted", "cg"):
        res = gwlite.gromov_wasserstein(A6 * s, B7 * s, method=method, lower="tlb")
        ref = gwlite.gromov_wasserstein(A6, B7, method=method, lower="tlb")
        assert np.isfinite([res.value, res.lower, res.upper]).all()
        for field in ("value", "lower", "upper"):
            assert getattr(res, field) == pytest.approx(getattr(ref, field) * s**2, rel=1e-9)


@pytest.mark.parametrize("s", [1e20, 1e30, 1e-20])
@pytest.mark.parametrize("method", ["sorted", "cg"])
def test_float32_outside_its_range_is_computed_in_float64(s, method):
    C, D = (A6 * s).astype(np.float32), (B7 * s).astype(np.float32)
    res = gwlite.gromov_wasserstein(C, D, method=method)
    ref = gwlite.gromov_wasserstein(C.astype(np.float64), D.astype(np.float64), method=method)
    assert res.coupling.dtype == np.float64
    assert np.isfinite([res.value, res.lower, res.upper]).all()
    assert res.upper == pytest.approx(ref.upper, rel=1e-9)
    host = C.astype(np.float64), D.astype(np.float64)
    assert res.upper == pytest.approx(gw_cost_dense(*host, res.coupling), rel=1e-9)


def test_float32_within_its_range_stays_float32():
    res = gwlite.gromov_wasserstein(A6.astype(np.float32), B7.astype(np.float32))
    assert res.coupling.dtype == np.float32


def test_torch_float32_widening_keeps_the_gradient():
    C = torch.tensor(A6 * 1e20, dtype=torch.float32, requires_grad=True)
    D = torch.tensor(B7 * 1e20, dtype=torch.float32)
    res = gwlite.gromov_wasserstein(C, D)
    assert res.upper.dtype == torch.float64 and torch.isfinite(res.upper)
    res.upper.backward()
    assert torch.isfinite(C.grad).all() and C.grad.dtype == torch.float32


def test_all_zero_matrices_are_certified_zero():
    for method in gwlite.METHODS:
        res = gwlite.gromov_wasserstein(np.zeros((4, 4)), np.zeros((4, 4)), method=method)
        assert res.lower == res.upper == 0.0 and res.certified


# ---------------------------------------------------------------- signs
@settings(max_examples=40, deadline=None)
@given(problems(max_n=6), st.sampled_from(["square_loss", "abs_loss"]))
def test_bounds_and_costs_are_never_negative(inst, loss_fun):
    C1, C2, p, q = inst
    for kind in gwlite.LOWER_BOUNDS:
        assert gwlite.lower_bound(C1, C2, p, q, loss_fun=loss_fun, lower=kind) >= 0
        # isomorphic inputs: every bound is 0 up to round-off, never below it
        perm = np.arange(len(C1))[::-1]
        w = None if p is None else p[perm]
        assert gwlite.lower_bound(C1, C1[np.ix_(perm, perm)], p, w, lower=kind) >= 0
    assert gwlite.sorted_upper_bound(C1, C2, p, q, loss_fun=loss_fun) >= 0


def test_cost_of_constant_matrices_is_not_negative():
    # the dense square-loss formula subtracts equal sums: -8.9e-16 before the clamp
    C, D = np.full((2, 2), 1.5), np.full((6, 6), 1.5)
    q = np.array([0.3, 0.0, 0.1, 0.2, 0.25, 0.15])
    res = gwlite.gromov_wasserstein(C, D, None, q)
    assert res.upper == 0.0 and res.lower == 0.0 and res.certified
