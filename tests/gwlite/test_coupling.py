"""GW cost of couplings and rounding onto the transport polytope."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import gw_cost_dense, random_coupling
from strategies import problems

from gwlite.coupling import (
    SparseCoupling,
    coupling_inner,
    gw_cost,
    marginal_error,
    round_to_polytope,
    to_dense,
)
from gwlite.errors import GWInputError
from gwlite.families import generate

LOSSES = ["square_loss", "abs_loss"]


def _weights(n, w):
    return np.full(n, 1.0 / n) if w is None else w


@settings(max_examples=40, deadline=None)
@given(problems(max_n=6), st.sampled_from(LOSSES), st.integers(0, 2**31 - 1))
def test_dense_cost_matches_brute_force(inst, loss_fun, seed):
    C1, C2, p, q = inst
    T = random_coupling(np.random.default_rng(seed), _weights(len(C1), p), _weights(len(C2), q))
    assert gw_cost(C1, C2, T, loss_fun) == pytest.approx(
        gw_cost_dense(C1, C2, T, loss_fun), rel=1e-10, abs=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(problems(max_n=6), st.sampled_from(LOSSES), st.integers(0, 2**31 - 1))
def test_sparse_cost_matches_dense(inst, loss_fun, seed):
    C1, C2, _, _ = inst
    rng = np.random.default_rng(seed)
    T = rng.random((len(C1), len(C2))) * (rng.random((len(C1), len(C2))) < 0.4)
    T[0, 0] += 0.1  # never empty
    T /= T.sum()  # a coupling has mass 1 (gw_cost refuses other masses)
    rows, cols = np.nonzero(T)
    sparse = SparseCoupling(rows, cols, T[rows, cols], T.shape)
    assert gw_cost(C1, C2, sparse, loss_fun) == pytest.approx(
        gw_cost_dense(C1, C2, T, loss_fun), rel=1e-10, abs=1e-12
    )
    np.testing.assert_array_equal(to_dense(sparse), T)


@pytest.mark.parametrize("family", ["erdos_renyi", "tree", "regular"])
def test_level_set_abs_cost_on_graphs(family):
    # adjacency matrices have two distinct entries: the level-set path is taken
    C1, p = generate(family, 7, seed=1)
    C2, q = generate("sbm", 6, seed=2)
    T = random_coupling(np.random.default_rng(0), p, q)
    assert gw_cost(C1, C2, T, "abs_loss") == pytest.approx(
        gw_cost_dense(C1, C2, T, "abs_loss"), rel=1e-12
    )


def test_brute_abs_cost_with_many_levels():
    rng = np.random.default_rng(5)
    C1, C2 = rng.random((9, 9)), rng.random((10, 10))  # > 64 distinct values
    T = random_coupling(rng, np.full(9, 1 / 9), np.full(10, 1 / 10))
    assert gw_cost(C1, C2, T, "abs_loss") == pytest.approx(
        gw_cost_dense(C1, C2, T, "abs_loss"), rel=1e-12
    )


def test_inner_product_matches_einsum():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(5, 5)), rng.normal(size=(4, 4))
    T = random_coupling(rng, np.full(5, 0.2), np.full(4, 0.25))
    expected = np.einsum("ik,jl,ij,kl->", A, B, T, T)
    assert coupling_inner(A, B, T) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**31 - 1), st.floats(0, 0.5))
def test_rounding_gives_a_nearby_feasible_coupling(n, m, seed, noise):
    rng = np.random.default_rng(seed)
    p, q = rng.random(n) + 0.01, rng.random(m) + 0.01
    p, q = p / p.sum(), q / q.sum()
    F = np.outer(p, q) * (1 + noise * rng.normal(size=(n, m)))
    F = np.abs(F)
    G = round_to_polytope(F, p, q)
    assert G.min() >= 0
    assert marginal_error(G, p, q) < 1e-14
    # Altschuler et al. (2017), Lemma 7: ||G - F||_1 <= 2 (||F1 - p||_1 + ||F^T 1 - q||_1)
    assert np.abs(G - F).sum() <= 2 * marginal_error(F, p, q) * 2 + 1e-14


def test_rounding_keeps_a_feasible_plan():
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    T = np.outer(p, q)
    np.testing.assert_allclose(round_to_polytope(T, p, q), T, atol=1e-16)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss_fun"):
        gw_cost(np.eye(2), np.eye(2), np.eye(2) / 2, "kl_loss")


# ---------------------------------------------------------------- gw_cost's checks
C3 = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
C2_ = np.array([[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize(
    ("coupling", "message"),
    [
        (np.ones((2, 3)) / 6, "must have shape \\(n, m\\) = \\(3, 2\\)"),
        (np.ones(6) / 6, "must have shape"),
        (np.full((3, 2), 7.0), "total mass 42"),
        (np.full((3, 2), np.nan), "non-finite"),
        (np.array([[0.5, -0.1], [0.1, 0.2], [0.1, 0.2]]), "negative"),
        (np.full((3, 2), 1 / 6) + 0j, "complex"),
        (torch.full((3, 2), 1 / 6, dtype=torch.float64), "torch array but C1, C2 are numpy"),
        (
            SparseCoupling(np.array([0, 5]), np.array([0, 1]), np.array([0.5, 0.5]), (3, 2)),
            "indices",
        ),
    ],
)
def test_gw_cost_refuses_what_is_not_a_coupling(coupling, message):
    with pytest.raises(GWInputError, match=message):
        gw_cost(C3, C2_, coupling)


def test_gw_cost_checks_the_marginals_when_given():
    T = np.array([[1 / 3, 0.0], [0.0, 1 / 3], [1 / 6, 1 / 6]])
    p, q = np.full(3, 1 / 3), np.array([0.5, 0.5])
    assert float(gw_cost(C3, C2_, T, p=p, q=q)) == pytest.approx(gw_cost_dense(C3, C2_, T))
    with pytest.raises(GWInputError, match="marginals are off"):
        gw_cost(C3, C2_, T, q=np.array([0.9, 0.1]))


def test_gw_cost_validates_the_matrices_like_the_solvers():
    with pytest.raises(GWInputError, match="non-finite"):
        gw_cost(np.array([[0.0, np.nan], [1.0, 0.0]]), C2_, np.eye(2) / 2)
    with pytest.raises(GWInputError, match="square"):
        gw_cost(np.ones((2, 3)), C2_, np.eye(2) / 2)
    with pytest.raises(GWInputError, match="too large"):
        gw_cost(C2_ * 1e200, C2_, np.eye(2) / 2)


def test_gw_cost_accepts_lists_and_unchecked_calls():
    T = [[1 / 3, 0.0], [0.0, 1 / 3], [1 / 6, 1 / 6]]
    expected = gw_cost_dense(C3, C2_, np.asarray(T))
    assert float(gw_cost(C3.tolist(), C2_.tolist(), T)) == pytest.approx(expected)
    # check=False: the solvers' own couplings, priced as they are (mass 2: cost x 4)
    assert float(gw_cost(C3, C2_, 2 * np.asarray(T), check=False)) == pytest.approx(4 * expected)
