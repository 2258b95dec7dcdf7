"""gwlite.pairwise on point clouds: the dense answers without matrices, bounds as bounds,
the knn prefilter, engines and store, bad inputs; and the lean quantised SLB."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import gw_cost_dense, random_coupling
from scipy.spatial.distance import cdist

import gwlite
from gwlite.errors import GWInputError
from gwlite.pairs.clouds import as_clouds
from gwlite.pairs.result import PairwiseResult
from gwlite.pointcloud import PointCloud
from gwlite.pointcloud._lean import band_gap_lower_chunked, quantized_slb_chunked
from gwlite.pointcloud._quantise import quantise
from gwlite.pointcloud.bounds import _quantized_slb, band_gap_lower

METRICS = ["euclidean", "sqeuclidean"]
LOSSES = ["square_loss", "abs_loss"]
QUIET = {"engine": 1, "progress": False}
seeds = st.integers(0, 2**31 - 1)


def _clouds(seed, count, metric, weighted, sizes=(3, 12)):
    """Clouds of different sizes and dimensions, in general position."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n, d = int(rng.integers(*sizes)), int(rng.integers(1, 4))
        X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d)
        w = None
        if weighted:
            w = rng.uniform(0.1, 1, n)
            w = w / w.sum()
        out.append(PointCloud(X, metric, w))
    return out


def _dense(clouds):
    return [(cdist(c.X, c.X, c.metric), c.p) for c in clouds]


def _close(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.all(np.abs(a - b) <= 1e-9 * np.maximum(1.0, np.abs(b))), np.max(np.abs(a - b))


# ---------------------------------------------------------------- dense answers at small n
@settings(max_examples=12, deadline=None)
@given(
    seed=seeds,
    metric=st.sampled_from(METRICS),
    loss_fun=st.sampled_from(LOSSES),
    lower=st.sampled_from(["mean_row", "flb", "slb", "tlb"]),
    weighted=st.booleans(),
)
def test_sorted_bounds_equal_pairwise_on_the_dense_matrices(
    seed, metric, loss_fun, lower, weighted
):
    clouds = _clouds(seed, 5, metric, weighted)
    got = gwlite.pairwise(clouds, lower=lower, loss_fun=loss_fun, **QUIET)
    want = gwlite.pairwise(_dense(clouds), lower=lower, loss_fun=loss_fun, **QUIET)
    _close(got.lower, want.lower)
    _close(got.upper, want.upper)
    assert got.diagnostics["spaces_pair_by_pair"] == 0


@pytest.mark.parametrize("metric", METRICS)
def test_symmetric_clouds_with_tied_features_give_the_dense_numbers(metric):
    # regular polygons, a grid and a shuffled copy: every mean-row feature is tied
    angles = [2 * np.pi * np.arange(k) / k for k in (4, 6, 8)]
    polygons = [np.stack([np.cos(a), np.sin(a)], axis=1) for a in angles]
    grid = np.stack(np.meshgrid(np.arange(3.0), np.arange(3.0)), axis=-1).reshape(-1, 2)
    shuffled = grid[np.random.default_rng(0).permutation(9)] @ np.array([[0, -1], [1, 0.0]])
    clouds = [PointCloud(X, metric) for X in (*polygons, grid, shuffled)]
    for lower in ("mean_row", "flb"):
        got = gwlite.pairwise(clouds, lower=lower, **QUIET)
        want = gwlite.pairwise(_dense(clouds), lower=lower, **QUIET)
        _close(got.lower, want.lower)
        _close(got.upper, want.upper)


@pytest.mark.parametrize("method, options", [("cg", {"max_iter": 50}), ("proximal", {})])
def test_other_methods_give_the_plans_of_pairwise_on_the_dense_matrices(method, options):
    clouds = _clouds(3, 3, "sqeuclidean", True)
    got = gwlite.pairwise(clouds, method=method, **options, **QUIET)
    dense = gwlite.pairwise(_dense(clouds), method=method, **options, **QUIET)
    _close(got.upper, dense.upper)
    _close(got.lower, dense.lower)
    if method == "cg":  # pair by pair (proximal runs pairs as one batch, on clouds too)
        for i, j in ((0, 1), (0, 2), (1, 2)):
            one = gwlite.gromov_wasserstein(clouds[i], clouds[j], method=method, **options)
            _close([got.lower[i, j], got.upper[j, i]], [one.lower, one.upper])


def test_multiscale_pairs_are_single_multiscale_calls():
    clouds = _clouds(5, 3, "sqeuclidean", False, sizes=(30, 60))
    got = gwlite.pairwise(clouds, method="multiscale", n_clusters=8, **QUIET)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        one = gwlite.gromov_wasserstein(clouds[i], clouds[j], method="multiscale", n_clusters=8)
        _close([got.lower[i, j], got.upper[i, j]], [one.lower, one.upper])


def test_no_n_by_n_matrix_at_a_mid_size():
    import tracemalloc

    rng = np.random.default_rng(1)
    n = 6000  # above DENSE_MAX; one n x n float64 matrix would be 288 MB
    clouds = [PointCloud(rng.normal(size=(n - 500 * k, 3)), "sqeuclidean") for k in range(3)]
    tracemalloc.start()
    try:
        res = gwlite.pairwise(clouds, lower="flb", knn=1, **QUIET)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * n * 64  # O(n d^2) features and plans: about 6 MB, not 288
    assert np.all(res.lower <= res.upper)


# ---------------------------------------------------------------- bounds as bounds
@settings(max_examples=20, deadline=None)
@given(seed=seeds, metric=st.sampled_from(METRICS), loss_fun=st.sampled_from(LOSSES))
def test_every_interval_holds_the_cost_of_every_coupling_we_build(seed, metric, loss_fun):
    clouds = _clouds(seed, 3, metric, True, sizes=(2, 6))
    res = gwlite.pairwise(clouds, lower="flb", loss_fun=loss_fun, **QUIET)
    rng = np.random.default_rng(seed)
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            (C1, p), (C2, q) = _dense([clouds[i], clouds[j]])
            costs = [gw_cost_dense(C1, C2, np.outer(p, q), loss_fun)]
            costs += [gw_cost_dense(C1, C2, random_coupling(rng, p, q), loss_fun) for _ in range(5)]
            # lower <= GW <= every coupling's cost; upper is one coupling's cost
            assert res.lower[i, j] <= min(costs) + 1e-9 * max(1.0, min(costs))
            assert res.lower[i, j] <= res.upper[i, j]
            sorted_cost = float(gwlite.sorted_upper_bound(C1, C2, p, q, loss_fun=loss_fun))
            _close(res.upper[i, j], sorted_cost)


# ---------------------------------------------------------------- knn, engines, store
def test_knn_prefilter_keeps_the_lists_of_the_full_run():
    rng = np.random.default_rng(7)
    # two families far apart: most cross pairs are ruled out by the cheap bounds
    clouds = [PointCloud(rng.normal(size=(12, 2)), "sqeuclidean") for _ in range(6)]
    clouds += [PointCloud(5 * rng.normal(size=(12, 3)), "sqeuclidean") for _ in range(6)]
    k = 2
    pruned = gwlite.pairwise(clouds, method="cg", knn=k, max_iter=100, **QUIET)
    full = gwlite.pairwise(clouds, method="cg", max_iter=100, **QUIET)
    cheap = gwlite.pairwise(clouds, lower="flb", **QUIET)
    assert pruned.diagnostics["cheap"] == "sorted with lower = max(mean_row, flb)"
    assert 0 < pruned.saved < pruned.n_pairs
    U = np.where(np.eye(12, dtype=bool), np.inf, pruned.upper)
    kth = np.sort(U, axis=1)[:, k - 1]
    for i, j in zip(*np.nonzero(~pruned.evaluated & ~np.eye(12, dtype=bool))):
        # a skipped pair is proven out of both lists (or its interval is closed)
        assert pruned.certified[i, j] or (
            pruned.lower[i, j] > kth[i] and pruned.lower[i, j] > kth[j]
        )
    ran = pruned.evaluated
    assert np.allclose(pruned.upper[ran], np.minimum(full.upper, cheap.upper)[ran])
    # and the lists are those of the full run (with the cheap bounds, as in knn mode)
    combined = PairwiseResult(
        np.maximum(full.lower, pruned.lower),
        np.minimum(full.upper, cheap.upper),
        full.certified,
        full.evaluated,
        "cg",
        "square_loss",
        0.0,
    )
    assert np.array_equal(pruned.knn(k).indices, combined.knn(k).indices)


def test_chunks_processes_and_store_change_no_number(tmp_path):
    clouds = _clouds(11, 7, "euclidean", False)
    base = gwlite.pairwise(clouds, chunk=3, **QUIET)
    for kwargs in ({"chunk": 1, **QUIET}, {"chunk": 3, "engine": 2, "progress": False}):
        other = gwlite.pairwise(clouds, **kwargs)
        for name in ("lower", "upper", "certified"):
            assert np.array_equal(getattr(other, name), getattr(base, name))
    # the cloud's own chunking (streamed distances) changes nothing beyond round-off
    small = [PointCloud(c.X, c.metric, chunk_entries=5) for c in clouds]
    _close(gwlite.pairwise(small, **QUIET).upper, base.upper)
    path = tmp_path / "clouds.zarr"
    first = gwlite.pairwise(clouds, store=path, chunk=3, **QUIET)
    again = gwlite.pairwise(clouds, store=path, **QUIET)
    assert again.diagnostics["pairs_from_store"] == again.n_pairs
    assert np.array_equal(first.upper, again.upper) and np.array_equal(first.upper, base.upper)
    moved = [PointCloud(c.X + 1e-3, c.metric) for c in clouds]
    with pytest.raises(GWInputError, match="other inputs"):
        gwlite.pairwise(moved, store=path, **QUIET)


# ---------------------------------------------------------------- bad inputs
@settings(max_examples=10, deadline=None)
@given(count=st.integers(2, 5), bad=st.data())
def test_a_bad_cloud_is_named_by_its_index(count, bad):
    i = bad.draw(st.integers(0, count - 1))
    value = bad.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    arrays = [np.random.default_rng(k).normal(size=(5, 2)) for k in range(count)]
    arrays[i][bad.draw(st.integers(0, 4)), 1] = value
    with pytest.raises(GWInputError, match=rf"spaces\[{i}\]: X has 1 non-finite"):
        as_clouds(arrays, "sqeuclidean")


def test_mixing_clouds_and_matrices_is_refused():
    cloud = PointCloud(np.zeros((3, 2)))
    with pytest.raises(GWInputError, match=r"spaces\[1\] is a matrix.*all point clouds"):
        gwlite.pairwise([cloud, np.zeros((3, 3))], **QUIET)
    with pytest.raises(GWInputError, match=r"spaces\[2\] is a gwlite.PointCloud"):
        gwlite.pairwise([np.zeros((3, 3)), np.zeros((2, 2)), cloud], **QUIET)
    with pytest.raises(GWInputError, match=r"spaces\[0\] holds a gwlite.PointCloud"):
        gwlite.pairwise([(cloud, np.full(3, 1 / 3))], **QUIET)
    with pytest.raises(GWInputError, match="multiscale.*point clouds"):
        gwlite.pairwise([np.zeros((3, 3)), np.zeros((2, 2))], method="multiscale", **QUIET)
    with pytest.raises(GWInputError, match="not clouds"):
        gwlite.pairwise([cloud, cloud], alpha=0.5, progress=False)
    with pytest.raises(GWInputError, match="2 weight vectors for 1 clouds"):
        as_clouds([np.zeros((3, 2))], weights=[None, None])


# ---------------------------------------------------------------- the lean quantised SLB
@settings(max_examples=25, deadline=None)
@given(seed=seeds, k=st.integers(1, 12), chunk=st.integers(1, 64), r=st.sampled_from([1, 2]))
def test_chunked_band_gap_equals_the_whole_grid(seed, k, chunk, r):
    rng = np.random.default_rng(seed)
    sides = []
    for _ in range(2):
        size = int(rng.integers(1, 4 * k + 2))
        lo = rng.integers(0, 5, size).astype(float)  # ties, as between cluster pairs
        sides += [lo, lo + rng.integers(0, 3, size), rng.uniform(0.1, 1, size)]
    whole = band_gap_lower(*sides, r)
    parts = band_gap_lower_chunked(*sides, r, chunk=chunk)
    assert abs(parts - whole) <= 1e-12 * max(1.0, whole)


@pytest.mark.parametrize("metric", METRICS)
def test_chunked_quantised_slb_equals_the_bound(metric):
    rng = np.random.default_rng(2)
    c1 = PointCloud(rng.normal(size=(400, 3)), metric)
    c2 = PointCloud(rng.normal(size=(300, 2)) * [1, 3], metric)
    Q1, Q2 = quantise(c1, 40), quantise(c2, 30)
    for r in (1, 2):
        want = _quantized_slb(Q1, Q2, (metric, metric), r)
        for chunk in (16, 1000, 1 << 18):
            got = quantized_slb_chunked(Q1, Q2, (metric, metric), r, chunk)
            assert abs(got - max(0.0, want)) <= 1e-12 * max(1.0, want)


# ---------------------------------------------------------------- the command line
def test_cli_reads_point_files_and_names_a_bad_one(tmp_path, capsys):
    from gwlite.cli import main

    clouds = _clouds(4, 3, "sqeuclidean", False)
    files = []
    for k, c in enumerate(clouds):
        files.append(str(tmp_path / f"c{k}.npy"))
        np.save(files[-1], c.X)
    out = tmp_path / "out"
    assert main(["pairwise", "--points", "sqeuclidean", *files, "--out", str(out), "--quiet"]) == 0
    assert "point clouds, metric sqeuclidean" in capsys.readouterr().out
    want = gwlite.pairwise(clouds, **QUIET)
    assert np.array_equal(np.load(out / "upper.npy"), want.upper)
    bad = clouds[1].X.copy()
    bad[2, 0] = np.nan
    np.save(files[1], bad)
    assert main(["pairwise", "--points", "sqeuclidean", *files, "--out", str(out), "--quiet"]) == 2
    assert "spaces[1]: X has 1 non-finite" in capsys.readouterr().err


def test_a_dask_cluster_gives_the_local_numbers():
    distributed = pytest.importorskip("distributed", reason="needs gwlite[pairwise] (dask)")
    import logging

    clouds = _clouds(12, 6, "sqeuclidean", True)
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        for options in ({"chunk": 2}, {"chunk": 2, "knn": 2, "method": "cg", "max_iter": 30}):
            local = gwlite.pairwise(clouds, **options, **QUIET)
            remote = gwlite.pairwise(clouds, engine=client, progress=False, **options)
            assert remote.diagnostics["engine"].startswith("dask cluster at")
            for name in ("lower", "upper", "certified", "evaluated"):
                assert np.array_equal(getattr(local, name), getattr(remote, name)), name


def test_multiscale_reports_the_quantised_slb_of_its_clusters():
    # square loss: the coarse proximal solve refuses abs_loss on clouds' many distances
    loss_fun = "square_loss"
    from gwlite.pointcloud.bounds import cloud_lower

    rng = np.random.default_rng(8)
    c1 = PointCloud(rng.normal(size=(300, 3)), "sqeuclidean")
    c2 = PointCloud(rng.normal(size=(250, 2)), "sqeuclidean")
    res = gwlite.gromov_wasserstein(
        c1, c2, method="multiscale", n_clusters=20, loss_fun=loss_fun, max_refine=0
    )
    Q = (quantise(c1, 20, 0), quantise(c2, 20, 0))
    want = cloud_lower(c1, c2, "quantized_slb", loss_fun, quantisations=Q)
    got = res.diagnostics["bounds"]["quantized_slb"]
    assert abs(got - want) <= 1e-12 * max(1.0, want)
    assert res.lower >= got - 1e-12 and res.lower <= res.upper


def test_multiscale_takes_the_absolute_loss():
    rng = np.random.default_rng(9)
    c1 = PointCloud(rng.normal(size=(60, 3)), "euclidean")
    c2 = PointCloud(rng.normal(size=(50, 2)), "euclidean")
    res = gwlite.gromov_wasserstein(c1, c2, method="multiscale", n_clusters=8, loss_fun="abs_loss")
    assert res.diagnostics["stages"][1]["method"] == "sorted"
    T = res.coupling.toarray()
    assert np.allclose(T.sum(axis=1), c1.p) and np.allclose(T.sum(axis=0), c2.p)
    (C1, p), (C2, q) = _dense([c1, c2])
    _close(res.upper, gw_cost_dense(C1, C2, T, "abs_loss"))
    assert res.lower <= res.upper
    assert res.lower <= gw_cost_dense(C1, C2, np.outer(p, q), "abs_loss") + 1e-9


@pytest.mark.parametrize("method", ["sorted", "cg"])
def test_torch_clouds_give_the_numpy_numbers(method):
    """torch clouds are copied to the host once (pairwise runs there): same numbers."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(31)
    arrays = [rng.normal(size=(int(rng.integers(8, 20)), 3)) for _ in range(4)]
    on_torch = [PointCloud(torch.as_tensor(X)) for X in arrays]
    on_numpy = [PointCloud(X) for X in arrays]
    a = gwlite.pairwise(on_torch, method=method, progress=False)
    b = gwlite.pairwise(on_numpy, method=method, progress=False)
    np.testing.assert_array_equal(np.asarray(a.lower), np.asarray(b.lower))
    np.testing.assert_array_equal(np.asarray(a.upper), np.asarray(b.upper))
