"""Point clouds: the dense answers without dense matrices, bounds as bounds, bad inputs."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import best_permutation, gw_cost_dense, random_coupling
from scipy.spatial.distance import cdist

import gwlite
from gwlite.pointcloud import PointCloud, dispatch, geometry
from gwlite.pointcloud.bounds import cloud_lower
from gwlite.pointcloud.samples import rigid_copy, torus, trefoil

METRICS = ["euclidean", "sqeuclidean"]
LOSSES = ["square_loss", "abs_loss"]
seeds = st.integers(0, 2**31 - 1)


def _cloud_pair(seed, n, m, d1, d2, metric, weighted):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d1)), rng.normal(size=(m, d2)) * rng.uniform(0.5, 2, size=d2)
    p = q = None
    if weighted:
        p, q = rng.uniform(0.1, 1, n), rng.uniform(0.1, 1, m)
        p, q = p / p.sum(), q / q.sum()
    return PointCloud(X, metric, p), PointCloud(Y, metric, q)


def _dense(c):
    return cdist(c.X, c.X, c.metric), c.p


def _close(a, b, scale=1.0):
    assert abs(float(a) - float(b)) <= 1e-10 * max(1.0, scale, abs(float(b)))


# ---------------------------------------------------------------- dense answers at small n
@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    n=st.integers(1, 9),
    m=st.integers(1, 9),
    d1=st.integers(1, 3),
    d2=st.integers(1, 3),
    metric=st.sampled_from(METRICS),
    loss_fun=st.sampled_from(LOSSES),
    weighted=st.booleans(),
)
def test_bounds_and_costs_equal_the_dense_ones(seed, n, m, d1, d2, metric, loss_fun, weighted):
    c1, c2 = _cloud_pair(seed, n, m, d1, d2, metric, weighted)
    (D1, p), (D2, q) = _dense(c1), _dense(c2)
    scale = max(D1.max(), D2.max(), 1.0) ** 2
    for lower in ("mean_row", "flb", "slb", "tlb"):
        got = gwlite.lower_bound(c1, c2, loss_fun=loss_fun, lower=lower)
        _close(got, gwlite.lower_bound(D1, D2, p, q, loss_fun=loss_fun, lower=lower), scale)
    T = random_coupling(np.random.default_rng(seed), p, q)
    _close(gwlite.gw_cost(c1, c2, T, loss_fun), gw_cost_dense(D1, D2, T, loss_fun), scale)
    product = gw_cost_dense(D1, D2, np.outer(p, q))
    _close(geometry.product_cost(c1, c2), product, scale)
    sparse = scipy.sparse.csr_array(T)
    _close(
        gwlite.gw_cost(c1, c2, sparse, loss_fun, p=p, q=q),
        gw_cost_dense(D1, D2, T, loss_fun),
        scale,
    )


@pytest.mark.parametrize("method", ["sorted", "cg", "proximal"])
def test_matrix_methods_give_the_dense_plans(method):
    c1, c2 = _cloud_pair(3, 12, 10, 3, 2, "euclidean", True)
    (D1, p), (D2, q) = _dense(c1), _dense(c2)
    got = gwlite.gromov_wasserstein(c1, c2, method=method)
    want = gwlite.gromov_wasserstein(D1, D2, p, q, method=method)
    np.testing.assert_allclose(got.coupling, want.coupling, atol=1e-12)
    assert (got.lower, got.upper) == pytest.approx((want.lower, want.upper), abs=1e-12)
    assert got.diagnostics["route"].startswith(method)


def test_clouds_of_different_dimensions_are_compared():
    X = torus(60, seed=0)
    res = gwlite.gromov_wasserstein(PointCloud(X), PointCloud(X[:, :2]))
    assert 0 < res.lower <= res.upper


def test_weights_given_twice_are_refused():
    c = PointCloud(np.eye(3), weights=np.full(3, 1 / 3))
    with pytest.raises(gwlite.GWInputError, match="given twice"):
        gwlite.gromov_wasserstein(c, c, np.full(3, 1 / 3))


# ---------------------------------------------------------------- chunks and memory
@settings(max_examples=12, deadline=None)
@given(seed=seeds, chunk=st.integers(1, 200), metrics=st.tuples(*[st.sampled_from(METRICS)] * 2))
def test_chunk_size_changes_no_number(seed, chunk, metrics):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(17, 3)), rng.normal(size=(13, 2))
    T = random_coupling(rng, np.full(17, 1 / 17), np.full(13, 1 / 13))
    for loss_fun in LOSSES:
        values = []
        for entries in (chunk, 10**7):
            c1, c2 = PointCloud(X, metrics[0], chunk_entries=entries), PointCloud(Y, metrics[1])
            values.append(
                (
                    gwlite.gw_cost(c1, c2, T, loss_fun),
                    gwlite.lower_bound(c1, c2, loss_fun=loss_fun),
                )
            )
        np.testing.assert_allclose(values[0], values[1], rtol=1e-12, atol=1e-12)


def test_peak_memory_stays_in_the_chunk():
    """n = 6000 euclidean points: a distance matrix is 288 MB; the streamed cost of a
    permutation (36 million pairs) and the mean-row bound hold a few blocks of 2^20."""
    n = 6000
    X = torus(n, seed=1)
    c1 = PointCloud(X, chunk_entries=1 << 20)
    c2 = PointCloud(rigid_copy(X, seed=2)[0], chunk_entries=1 << 20)
    perm = np.random.default_rng(0).permutation(n)
    T = scipy.sparse.csr_array((np.full(n, 1 / n), (np.arange(n), perm)), shape=(n, n))
    tracemalloc.start()
    gwlite.gw_cost(c1, c2, T)
    gwlite.lower_bound(c1, c2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"


# ---------------------------------------------------------------- bounds are bounds
@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    n=st.integers(2, 6),
    metric=st.sampled_from(METRICS),
    loss_fun=st.sampled_from(LOSSES),
    k=st.integers(1, 6),
)
def test_every_bound_is_below_every_permutation(seed, n, metric, loss_fun, k):
    c1, c2 = _cloud_pair(seed, n, n, 2, 3, metric, False)
    (D1, _), (D2, _) = _dense(c1), _dense(c2)
    best, _ = best_permutation(D1, D2, loss_fun)
    tol = 1e-9 * max(1.0, D1.max(), D2.max()) ** 2
    for lower in ("mean_row", "flb", "quantized_slb", "quantized_tlb"):
        assert cloud_lower(c1, c2, lower, loss_fun, n_clusters=k) <= best + tol
    # the quantised bounds never exceed the bounds they quantise
    assert cloud_lower(c1, c2, "quantized_slb", loss_fun, n_clusters=k) <= (
        gwlite.lower_bound(c1, c2, loss_fun=loss_fun, lower="slb") + tol
    )
    assert cloud_lower(c1, c2, "quantized_tlb", loss_fun, n_clusters=k) <= (
        gwlite.lower_bound(c1, c2, loss_fun=loss_fun, lower="tlb") + tol
    )


@pytest.mark.parametrize("loss_fun", LOSSES)
def test_quantised_bounds_are_exact_with_one_point_per_cluster(loss_fun):
    c1, c2 = _cloud_pair(5, 30, 25, 3, 3, "sqeuclidean", True)
    for lower in ("slb", "tlb"):
        got = cloud_lower(c1, c2, f"quantized_{lower}", loss_fun, n_clusters=100)
        want = gwlite.lower_bound(c1, c2, loss_fun=loss_fun, lower=lower)
        assert got <= want + 1e-9 * want
        # SLB: exact up to the round-off slivers; TLB: up to its grid of 256 levels
        assert got >= want * (0.9 if lower == "tlb" else 1 - 1e-6)


# ---------------------------------------------------------------- multiscale
@pytest.mark.parametrize("metric", METRICS)
def test_multiscale_plan_is_feasible_and_priced_exactly(metric):
    c1 = PointCloud(torus(300, seed=1), metric)
    c2 = PointCloud(
        trefoil(250, seed=2), metric, np.linspace(1, 2, 250) / np.linspace(1, 2, 250).sum()
    )
    res = gwlite.gromov_wasserstein(c1, c2, method="multiscale", n_clusters=20, progress=False)
    T = res.coupling
    assert scipy.sparse.issparse(T) and T.shape == (300, 250)
    np.testing.assert_allclose(T.sum(axis=1), c1.p, atol=1e-12)
    np.testing.assert_allclose(T.sum(axis=0), c2.p, atol=1e-12)
    assert res.upper == pytest.approx(float(gwlite.gw_cost(c1, c2, T)), rel=1e-12)
    assert 0 <= res.lower <= res.upper
    assert [s["stage"] for s in res.diagnostics["stages"]] == [
        "quantise",
        "coarse",
        "lift",
        "refine",
        "price",
        "lower",
    ]
    assert res.diagnostics["lower_by"] in res.diagnostics["bounds"]


def test_multiscale_finds_a_rigid_copy():
    X = trefoil(3000, seed=1)
    Y, _ = rigid_copy(X, seed=3)
    c1, c2 = PointCloud(X, "sqeuclidean"), PointCloud(Y, "sqeuclidean")
    res = gwlite.gromov_wasserstein(c1, c2, method="multiscale", n_clusters=100, progress=False)
    product = float(gwlite.gw_cost(c1, c2, np.full((3000, 3000), 1 / 3000**2)))
    assert res.upper <= 0.01 * product


def test_auto_says_when_it_runs_multiscale(monkeypatch):
    monkeypatch.setattr(dispatch, "DENSE_MAX", 50)
    c1, c2 = PointCloud(torus(80, seed=1)), PointCloud(trefoil(70, seed=2))
    res = gwlite.gromov_wasserstein(c1, c2, progress=False)
    assert res.method == "multiscale" and "above DENSE_MAX" in res.diagnostics["route"]
    with pytest.raises(gwlite.GWInputError, match="multiscale"):
        gwlite.gromov_wasserstein(c1, c2, time_limit=3.0)


def test_multiscale_refuses_matrices_and_unknown_options():
    with pytest.raises(gwlite.GWInputError, match="PointCloud"):
        gwlite.gromov_wasserstein(np.eye(3), np.eye(3), method="multiscale")
    c = PointCloud(np.eye(3))
    with pytest.raises(gwlite.GWInputError, match="unknown option"):
        gwlite.gromov_wasserstein(c, c, method="multiscale", n_cluster=3)
    with pytest.raises(gwlite.GWInputError, match="n_clusters"):
        gwlite.gromov_wasserstein(c, c, method="multiscale", n_clusters=0)


def test_large_clouds_are_not_turned_into_matrices():
    c = PointCloud(np.zeros((dispatch.MATERIALISE_MAX + 1, 1)))
    with pytest.raises(gwlite.GWInputError, match="multiscale"):
        gwlite.lower_bound(c, c, lower="tlb")


# ---------------------------------------------------------------- the input contract
@settings(max_examples=15, deadline=None)
@given(seed=seeds, bad=st.sampled_from([np.nan, np.inf, -np.inf]), n=st.integers(1, 20))
def test_non_finite_coordinates_are_refused(seed, bad, n):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    X[rng.integers(n), rng.integers(2)] = bad
    with pytest.raises(gwlite.GWInputError, match="non-finite coordinates"):
        PointCloud(X)


@pytest.mark.parametrize(
    "X, kwargs, match",
    [
        (np.arange(4.0), {}, r"shape \(n, d\)"),
        (np.zeros((0, 3)), {}, "empty"),
        (np.zeros((3, 0)), {}, "empty"),
        (np.zeros((3, 2)), {"weights": np.array([0.5, 0.5, 0.0])}, "zero or negative"),
        (np.zeros((3, 2)), {"weights": np.array([0.6, 0.6, -0.2])}, "zero or negative"),
        (np.zeros((3, 2)), {"weights": np.array([0.5, 0.5])}, "shape"),
        (np.zeros((3, 2)), {"weights": np.array([0.5, 0.5, 0.5])}, "sum to 1"),
        (np.zeros((3, 2)), {"weights": np.array([np.nan, 0.5, 0.5])}, "non-finite"),
        (np.zeros((3, 2)), {"metric": "cosine"}, "unknown metric"),
        (np.zeros((3, 2)), {"chunk_entries": 0}, "chunk_entries"),
        (np.array([[1e200, 0.0], [-1e200, 0.0]]), {}, "overflow|too large"),
        (np.array([["a", "b"]]), {}, "not numeric"),
    ],
)
def test_bad_inputs_are_refused(X, kwargs, match):
    with pytest.raises(gwlite.GWInputError, match=match):
        PointCloud(X, **kwargs)


def test_torch_coordinates_are_accepted():
    torch = pytest.importorskip("torch")
    X = torus(40, seed=0)
    a = gwlite.lower_bound(PointCloud(torch.as_tensor(X)), PointCloud(X[:30]), lower="flb")
    # computed in torch against NumPy: equal up to float64 round-off
    b = gwlite.lower_bound(PointCloud(X), PointCloud(X[:30]), lower="flb")
    assert a == pytest.approx(b, rel=1e-12)


def test_bad_couplings_are_refused():
    c = PointCloud(np.eye(3))
    with pytest.raises(gwlite.GWInputError, match="shape"):
        gwlite.gw_cost(c, c, np.full((3, 2), 1 / 6))
    with pytest.raises(gwlite.GWInputError, match="mass"):
        gwlite.gw_cost(c, c, np.full((3, 3), 1.0))
    with pytest.raises(gwlite.GWInputError, match="negative"):
        gwlite.gw_cost(c, c, np.array([[0.5, -0.1, 0], [0, 0.3, 0], [0, 0, 0.3]]))


def test_a_cloud_and_a_matrix_are_compared_through_the_matrix():
    c1, c2 = _cloud_pair(4, 8, 6, 2, 3, "euclidean", False)
    (D1, p), (D2, _) = _dense(c1), _dense(c2)
    q = np.linspace(1, 2, 6) / np.linspace(1, 2, 6).sum()
    got = gwlite.gromov_wasserstein(c1, D2, None, q, method="sorted")
    want = gwlite.gromov_wasserstein(D1, D2, p, q, method="sorted")
    assert (got.lower, got.upper) == pytest.approx((want.lower, want.upper), abs=1e-12)
    assert gwlite.lower_bound(c1, D2, None, q, lower="tlb") == pytest.approx(
        gwlite.lower_bound(D1, D2, p, q, lower="tlb"), abs=1e-12
    )
