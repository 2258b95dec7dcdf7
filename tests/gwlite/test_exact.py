"""method="exact": against brute force, certification logic, limits and bad input."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

import gwlite
from gwlite.families import generate
from gwlite.solvers import exact

LOSSES = {"square_loss": 2, "abs_loss": 1}


def brute_force(C, D, r):
    """Minimum over all permutations of mean_ik |C_ik - D_s(i)s(k)|^r, and an argmin."""
    best, arg = np.inf, None
    for s in itertools.permutations(range(len(C))):
        s = list(s)
        cost = float(np.mean(np.abs(C - D[np.ix_(s, s)]) ** r))
        if cost < best:
            best, arg = cost, s
    return best, arg


def four_index_cost(C, D, T, r):
    """sum_ijkl |C_ik - D_jl|^r T_ij T_kl, written out with the full 4-index tensor."""
    L = np.abs(C[:, None, :, None] - D[None, :, None, :]) ** r
    return float(np.einsum("ijkl,ij,kl->", L, T, T))


def random_symmetric(n, seed):
    rng = np.random.default_rng(seed)
    A = np.triu(rng.uniform(size=(n, n)), 1)
    return A + A.T


def pair(family, n, seed):
    return generate(family, n, 2 * seed)[0], generate(family, n, 2 * seed + 1)[0]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(
    "family", ["erdos_renyi", "tree", "regular", "gram", "euclidean", "tree_metric"]
)
@pytest.mark.parametrize("n", [2, 4, 6])
def test_exact_matches_brute_force(family, n, loss):
    C, D = pair(family, n, seed=n)
    res = gwlite.gromov_wasserstein(C, D, method="exact", loss_fun=loss)
    best, _ = brute_force(C, D, LOSSES[loss])
    assert res.converged
    assert res.value == pytest.approx(best, rel=1e-12, abs=1e-14)
    assert res.lower <= best + 1e-12


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_matches_brute_force_n8_random(seed, loss):
    C, D = random_symmetric(8, seed), random_symmetric(8, seed + 10)
    res = gwlite.gromov_wasserstein(C, D, method="exact", loss_fun=loss)
    assert res.value == pytest.approx(brute_force(C, D, LOSSES[loss])[0], rel=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_exact_handles_asymmetric_matrices(loss):
    rng = np.random.default_rng(4)
    C, D = rng.uniform(size=(6, 6)), rng.uniform(size=(6, 6))
    res = gwlite.gromov_wasserstein(C, D, method="exact", loss_fun=loss)
    assert res.value == pytest.approx(brute_force(C, D, LOSSES[loss])[0], rel=1e-12)
    assert not res.certified or res.lower == pytest.approx(res.upper)
    assert "theorem_holds" not in res.diagnostics  # the theorem needs symmetric inputs


def test_result_fields_are_consistent():
    C, D = pair("sbm", 7, 0)
    res = gwlite.gromov_wasserstein(C, D, method="exact")
    perm = np.array(res.diagnostics["permutation"])
    assert sorted(perm) == list(range(7))
    expected = np.zeros((7, 7))
    expected[np.arange(7), perm] = 1 / 7
    np.testing.assert_array_equal(res.coupling, expected)
    assert res.upper == res.value == pytest.approx(four_index_cost(C, D, expected, 2), rel=1e-12)
    assert res.n_iter == res.diagnostics["nodes"]
    assert res.marginal_error < 1e-15
    assert res.method == "exact" and res.time_s > 0
    assert res.diagnostics["permutation_lower"] <= res.value


# ---------------------------------------------------------------- certification
CERTIFIED_FAMILIES = [("gram", "gram"), ("coactivation", "coactivation")]
CERTIFIED_FAMILIES += [("euclidean", "euclidean"), ("tree_metric", "euclidean")]


@pytest.mark.parametrize(("f1", "f2"), CERTIFIED_FAMILIES)
def test_psd_psd_and_cnd_cnd_pairs_are_certified(f1, f2):
    C, D = generate(f1, 6, 3)[0], generate(f2, 6, 4)[0]
    res = gwlite.gromov_wasserstein(C, D, method="exact")
    assert res.certified and res.converged
    assert res.lower == res.upper == res.value
    assert res.diagnostics["lower_kind"] == "certified"
    # the theorem says no coupling beats the best permutation: try conditional gradient
    cg = gwlite.gromov_wasserstein(C, D, method="cg")
    assert cg.upper >= res.value - 1e-10


def test_mixed_pair_is_not_certified_and_lower_is_valid_over_couplings():
    C, D = generate("gram", 6, 0)[0], generate("euclidean", 6, 1)[0]
    res = gwlite.gromov_wasserstein(C, D, method="exact")
    assert res.diagnostics["definiteness"] == ("psd", "nsd")
    assert not res.diagnostics["theorem_holds"]
    assert res.lower <= res.upper
    tlb = gwlite.lower_bound(C, D, lower="tlb")
    assert res.lower >= tlb - 1e-12
    # any coupling's cost bounds GW from above, hence bounds the reported lower too
    rng = np.random.default_rng(0)
    for _ in range(20):
        T = random_coupling(rng, 6)
        assert res.lower <= gwlite.gw_cost(C, D, T) + 1e-12


def random_coupling(rng, n):
    """A random doubly stochastic matrix / n (Sinkhorn scaling of a positive matrix)."""
    T = rng.uniform(0.01, 1.0, size=(n, n)) ** 4
    for _ in range(500):
        T /= T.sum(axis=1, keepdims=True) * n
        T /= T.sum(axis=0, keepdims=True) * n
    return T


@pytest.mark.parametrize("loss", LOSSES)
def test_swap_counterexample(loss):
    """C = [[0,1],[1,0]] vs I_2: best permutation 1, the uniform coupling 0.5."""
    C, D = np.array([[0.0, 1.0], [1.0, 0.0]]), np.eye(2)
    res = gwlite.gromov_wasserstein(C, D, method="exact", loss_fun=loss)
    assert res.value == pytest.approx(1.0)
    uniform = np.full((2, 2), 0.25)
    assert four_index_cost(C, D, uniform, LOSSES[loss]) == pytest.approx(0.5)
    assert not res.certified
    assert res.lower <= 0.5 + 1e-12
    assert res.upper == pytest.approx(1.0)


def test_2k2_vs_triangle_plus_isolated_counterexample():
    """2K2 vs K3+K1: best permutation 3/8, yet a coupling reaches 5/16."""
    A = np.zeros((4, 4))
    A[[0, 1, 2, 3], [1, 0, 3, 2]] = 1  # edges 01, 23
    B = np.zeros((4, 4))
    for i, j in [(1, 2), (1, 3), (2, 3)]:
        B[i, j] = B[j, i] = 1
    res = gwlite.gromov_wasserstein(A, B, method="exact")
    assert res.value == pytest.approx(3 / 8)
    assert not res.certified
    assert res.diagnostics["definiteness"] == ("indefinite", "indefinite")
    T = np.array([[2, 2, 0, 0], [2, 0, 2, 0], [0, 0, 0, 4], [0, 2, 2, 0]]) / 16
    np.testing.assert_allclose(T.sum(axis=0), 0.25)
    np.testing.assert_allclose(T.sum(axis=1), 0.25)
    assert four_index_cost(A, B, T, 2) == pytest.approx(5 / 16)
    assert float(gwlite.gw_cost(A, B, T)) == pytest.approx(5 / 16)
    assert res.lower <= 5 / 16 + 1e-12


@pytest.mark.parametrize("family", ["erdos_renyi", "barabasi_albert", "random_geometric"])
def test_adjacency_pairs_report_tlb_or_better(family):
    C, D = pair(family, 7, 1)
    res = gwlite.gromov_wasserstein(C, D, method="exact")
    tlb = gwlite.lower_bound(C, D, lower="tlb")
    assert res.lower >= min(tlb, res.upper) - 1e-12
    if not res.certified:
        assert res.diagnostics["lower_kind"] in ("tlb", "spectral")
        assert res.lower < res.upper


def test_abs_loss_is_only_certified_by_equality():
    C, D = pair("gram", 6, 0)
    res = gwlite.gromov_wasserstein(C, D, method="exact", loss_fun="abs_loss")
    assert "theorem_holds" not in res.diagnostics
    assert res.certified == (res.upper - res.lower <= 1e-12 * max(1.0, np.abs(C).max()))
    assert res.lower <= res.upper


def test_isomorphic_inputs_give_zero_and_are_certified():
    C = generate("erdos_renyi", 7, 5)[0]
    perm = np.random.default_rng(1).permutation(7)
    res = gwlite.gromov_wasserstein(C, C[np.ix_(perm, perm)], method="exact")
    assert res.value == 0.0 and res.lower == 0.0 and res.certified


# ---------------------------------------------------------------- limits
def test_time_limit_is_honoured():
    C, D = random_symmetric(14, 0), random_symmetric(14, 1)
    start = time.perf_counter()
    res = gwlite.gromov_wasserstein(C, D, method="exact", time_limit=0.05)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert not res.converged
    assert res.diagnostics["stop_reason"] == "time_limit"
    assert res.lower <= res.diagnostics["permutation_lower"] + 1e-12 or res.lower <= res.upper
    assert res.lower <= res.upper
    assert res.upper == pytest.approx(float(gwlite.gw_cost(C, D, res.coupling)), rel=1e-12)


def test_max_nodes_stops_the_search():
    C, D = random_symmetric(11, 2), random_symmetric(11, 3)
    res = gwlite.gromov_wasserstein(C, D, method="exact", max_nodes=3)
    assert res.n_iter <= 3
    assert not res.converged and res.diagnostics["stop_reason"] == "max_nodes"
    full = gwlite.gromov_wasserstein(C, D, method="exact")
    assert full.converged and full.value <= res.value
    assert res.diagnostics["permutation_lower"] <= full.value + 1e-12


def test_large_n_without_limit_raises_and_suggests_other_methods():
    n = exact.DEFAULT_MAX_N + 1
    C, D = random_symmetric(n, 0), random_symmetric(n, 1)
    with pytest.raises(gwlite.GWInputError, match="time_limit") as info:
        gwlite.gromov_wasserstein(C, D, method="exact")
    assert "cg" in str(info.value) and "sorted" in str(info.value)


def test_beyond_max_n_raises_even_with_a_limit():
    n = exact.MAX_N + 1
    C = random_symmetric(n, 0)
    with pytest.raises(gwlite.GWInputError, match="n <="):
        gwlite.gromov_wasserstein(C, C, method="exact", time_limit=1.0)


@pytest.mark.parametrize("bad", [0, -1.0])
def test_bad_time_limit(bad):
    C = random_symmetric(4, 0)
    with pytest.raises(gwlite.GWInputError, match="time_limit"):
        gwlite.gromov_wasserstein(C, C, method="exact", time_limit=bad)


def test_non_uniform_weights_raise():
    C = random_symmetric(4, 0)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(gwlite.GWInputError, match="uniform"):
        gwlite.gromov_wasserstein(C, C, p, p, method="exact")


def test_unequal_sizes_raise():
    with pytest.raises(gwlite.GWInputError, match="n == m"):
        gwlite.gromov_wasserstein(random_symmetric(4, 0), random_symmetric(5, 0), method="exact")


def test_unknown_option_raises():
    C = random_symmetric(4, 0)
    with pytest.raises(gwlite.GWInputError, match="unknown option"):
        gwlite.gromov_wasserstein(C, C, method="exact", epsilon=0.1)


def test_torch_input_gives_torch_coupling():
    torch = pytest.importorskip("torch")
    C, D = pair("gram", 5, 0)
    res = gwlite.gromov_wasserstein(torch.tensor(C), torch.tensor(D), method="exact")
    ref = gwlite.gromov_wasserstein(C, D, method="exact")
    assert isinstance(res.coupling, torch.Tensor)
    assert float(res.value) == pytest.approx(ref.value, rel=1e-12)
    assert res.certified
